"""Setting up the CRM: the three company properties the write-back fills, created once in a fake
HubSpot served over HTTP (`csm crm-setup`)."""

from __future__ import annotations

import pytest

from server.services.crm import CrmSetupError, create_properties
from server.settings import Settings
from tests.hubspot_fake import FakeHubSpot, serving
from tests.server.test_cli_run import invoke

NAMES = "chi_score,chi_band,chi_date"


def settings_for(hubspot: FakeHubSpot, token: str | None = None) -> Settings:
    return Settings.from_env(
        {"CSM_CRM_URL": hubspot.url, "CSM_CRM_TOKEN": token or hubspot.token, "CSM_CRM_PROPERTIES": NAMES}
    )


async def test_the_properties_are_created_with_the_configured_names_once() -> None:
    with serving(FakeHubSpot()) as hubspot:
        first = await create_properties(settings_for(hubspot))
        assert first == [("chi_score", "created"), ("chi_band", "created"), ("chi_date", "created")]
        kinds = {name: (held["type"], held["fieldType"]) for name, held in hubspot.defined.items()}
        assert kinds == {
            "chi_score": ("number", "number"),
            "chi_band": ("string", "text"),
            "chi_date": ("date", "date"),
        }
        again = await create_properties(settings_for(hubspot))
        assert again == [(name, "already there") for name in NAMES.split(",")]
        assert hubspot.received == []  # no batch update was made


async def test_a_token_without_the_schema_scope_says_so_and_is_not_quoted() -> None:
    with serving(FakeHubSpot(schema_scope=False)) as hubspot:
        with pytest.raises(CrmSetupError) as refused:
            await create_properties(settings_for(hubspot))
        assert "HTTP 403 MISSING_SCOPES" in str(refused.value) and "chi_score" in str(refused.value)
        with pytest.raises(CrmSetupError) as wrong:
            await create_properties(settings_for(hubspot, token="pat-eu1-not-this-one"))
        assert "HTTP 401" in str(wrong.value) and "pat-eu1-not-this-one" not in str(wrong.value)
        assert hubspot.defined == {}


def test_the_command_creates_them_or_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("CSM_CRM_URL", raising=False)
    unset = invoke("crm-setup")
    assert unset.exit_code == 1 and "CSM_CRM_URL is not set" in unset.output
    with serving(FakeHubSpot()) as hubspot:
        monkeypatch.setenv("CSM_CRM_URL", hubspot.url)
        monkeypatch.setenv("CSM_CRM_TOKEN", hubspot.token)
        created = invoke("crm-setup")
        assert created.exit_code == 0, created.output
        assert created.output.splitlines() == [
            "csm_health_score: created",
            "csm_health_band: created",
            "csm_health_date: created",
        ]
        assert invoke("crm-setup").output.count("already there") == 3
        hubspot.schema_scope, hubspot.defined = False, {}
        refused = invoke("crm-setup")
        assert refused.exit_code == 1 and "MISSING_SCOPES" in refused.output and hubspot.token not in refused.output
