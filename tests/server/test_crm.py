"""CHI write-back to a fake HubSpot over real HTTP, on SQLite and PostgreSQL: only what changed,
batches of at most 100, partial failures, rate limits, outages, and the token kept to the header."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, CrmPush, Run, RunDelivery
from server.db.session import create_engine, session_factory, session_scope
from server.services import crm
from server.services.crm import ATTEMPTS, push_health
from server.services.runs import RunRequest, run_in_process
from server.settings import Settings
from tests.conftest import POLICY_DIR
from tests.hubspot_fake import FakeHubSpot, serving
from tests.snapshots import account, active_order, write_snapshot

AS_OF = dt.date(2026, 12, 4)
PROPERTIES = ("csm_health_score", "csm_health_band", "csm_health_date")

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
async def factory(database_url: str) -> Any:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with serving(FakeHubSpot()) as fake:
        yield fake


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches of 2, so that five customers make three calls (limits and outages between batches)."""
    monkeypatch.setattr(crm, "BATCH_SIZE", 2)
    return 2


class Waits:
    """The injected sleep: records what the push would have waited, and waits nothing."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def crm_settings(fake: FakeHubSpot, **options: Any) -> Settings:
    return Settings(crm_url=fake.url, crm_token=fake.token, **options)


def customers(count: int) -> dict[str, str]:
    """Account id -> company id (zero-padded ids, so that both databases order them alike)."""
    return {f"A-{number:03d}": str(8_100_000 + number) for number in range(count)}


async def scored_run(
    factory: Factory,
    folder: Path,
    companies: Mapping[str, str | None],
    as_of: dt.date = AS_OF,
    no_order: tuple[str, ...] = (),
) -> Run:
    """A real engine run on a snapshot of these customers; an active order (or none) sets their score."""
    rows = {
        "accounts": [account(account_id, crm_id=crm_id) for account_id, crm_id in companies.items()],
        "orders": [active_order(account_id, as_of, 90) for account_id in companies if account_id not in no_order],
    }
    run, _ = await run_in_process(
        factory, RunRequest(folder=write_snapshot(folder, as_of, rows), policy_dir=POLICY_DIR)
    )
    assert run.state == "succeeded"
    return run


async def accounts(factory: Factory) -> dict[str, Account]:
    async with session_scope(factory) as session:
        return {row.id: row for row in await session.scalars(select(Account))}


async def pushes(factory: Factory) -> dict[str, CrmPush]:
    async with session_scope(factory) as session:
        return {row.account_id: row for row in await session.scalars(select(CrmPush))}


async def delivery(factory: Factory, run_id: int) -> RunDelivery:
    async with session_scope(factory) as session:
        found = await session.get(RunDelivery, (run_id, "crm"))
    assert found is not None
    return found


def sent_ids(fake: FakeHubSpot, since: int = 0) -> list[str]:
    """The company ids of every input received (answered or not), in order, from request `since` on."""
    return [item["id"] for request in fake.received[since:] for item in request.body["inputs"]]


def counts(**given: int) -> dict[str, int]:
    return dict.fromkeys(crm.COUNT_NAMES, 0) | given


async def test_the_first_push_sends_every_scored_customer_in_batches_of_100_and_a_retried_job_nothing(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    companies = customers(205) | {"B-001": None, "B-002": ""}
    hubspot.companies = {crm_id for crm_id in companies.values() if crm_id}
    run = await scored_run(factory, tmp_path / "snapshot", companies, no_order=("A-007",))
    scored = await accounts(factory)
    assert scored["A-007"].chi != scored["A-008"].chi  # two different scores go out

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())

    assert result == counts(candidates=205, pushed=205, no_crm_id=2, requests=3)
    assert [len(request.body["inputs"]) for request in hubspot.received] == [100, 100, 5]
    assert {request.authorization for request in hubspot.received} == {f"Bearer {hubspot.token}"}
    assert sent_ids(hubspot) == [companies[account_id] for account_id in sorted(customers(205))]
    first = hubspot.received[0].body["inputs"][7]
    assert first == {
        "id": companies["A-007"],
        "properties": {
            "csm_health_score": str(scored["A-007"].chi),
            "csm_health_band": scored["A-007"].band,
            "csm_health_date": "2026-12-04",
        },
        "objectWriteTraceId": f"run-{run.id}:A-007",
    }
    assert all(isinstance(value, str) for item in hubspot.updates for value in item["properties"].values())
    assert hubspot.properties[companies["A-100"]] == {
        "csm_health_score": str(scored["A-100"].chi),
        "csm_health_band": scored["A-100"].band,
        "csm_health_date": "2026-12-04",
    }
    recorded = await pushes(factory)
    assert set(recorded) == set(customers(205))  # nothing for the customers without a company
    for account_id, row in recorded.items():
        assert (row.crm_id, row.chi, row.band, row.as_of) == (
            companies[account_id],
            scored[account_id].chi,
            scored[account_id].band,
            AS_OF,
        )
        assert (row.run_id, row.failures, row.error) == (run.id, 0, None)
        assert row.pushed_at is not None
    done = await delivery(factory, run.id)
    assert (done.state, done.counts, done.errors) == ("done", result, [])

    # The job retried (or run again): what the CRM accepted is not sent again.
    again = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())
    assert again == counts(unchanged=205, no_crm_id=2)
    assert len(hubspot.received) == 3
    assert (await delivery(factory, run.id)).state == "done"


async def test_the_next_run_sends_only_the_customers_whose_score_or_company_changed(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    companies = customers(5) | {"A-009": None}
    hubspot.companies = {crm_id for crm_id in companies.values() if crm_id} | {"9999"}
    first = await scored_run(factory, tmp_path / "first", companies)
    await push_health(factory, first.id, crm_settings(hubspot), sleep=Waits())
    assert len(sent_ids(hubspot)) == 5
    before = await accounts(factory)

    later = AS_OF + dt.timedelta(days=1)
    # A-002 loses its order (another score); A-004 is now company 9999; the others stay the same.
    second = await scored_run(
        factory, tmp_path / "second", companies | {"A-004": "9999"}, as_of=later, no_order=("A-002",)
    )
    after = await accounts(factory)
    assert after["A-002"].chi != before["A-002"].chi
    assert after["A-001"].chi == before["A-001"].chi

    result = await push_health(factory, second.id, crm_settings(hubspot), sleep=Waits())

    assert result == counts(candidates=2, pushed=2, unchanged=3, no_crm_id=1, requests=1)
    [request] = hubspot.received[1:]
    assert [item["id"] for item in request.body["inputs"]] == [companies["A-002"], "9999"]
    assert request.body["inputs"][0]["properties"] == {
        "csm_health_score": str(after["A-002"].chi),
        "csm_health_band": after["A-002"].band,
        "csm_health_date": later.isoformat(),
    }
    recorded = await pushes(factory)
    assert (recorded["A-002"].chi, recorded["A-002"].as_of, recorded["A-002"].run_id) == (
        after["A-002"].chi,
        later,
        second.id,
    )
    assert (recorded["A-004"].crm_id, recorded["A-004"].run_id) == ("9999", second.id)
    assert (recorded["A-001"].as_of, recorded["A-001"].run_id) == (AS_OF, first.id)  # not sent again
    assert "A-009" not in recorded


async def test_a_partial_failure_records_who_was_accepted_and_the_rest_goes_out_once_the_crm_knows_them(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    companies = customers(4)
    hubspot.companies = {companies["A-000"], companies["A-001"], companies["A-003"]}
    run = await scored_run(factory, tmp_path / "snapshot", companies)

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())

    assert hubspot.received[0].status == 207
    assert result == counts(candidates=4, pushed=3, failed=1, requests=1)
    recorded = await pushes(factory)
    assert {account_id for account_id, row in recorded.items() if row.failures == 0} == {"A-000", "A-001", "A-003"}
    failed = recorded["A-002"]
    assert (failed.crm_id, failed.chi, failed.pushed_at, failed.failures) == (None, None, None, 1)
    assert failed.error is not None and failed.error.startswith("OBJECT_NOT_FOUND: Could not get some COMPANY objects")
    assert failed.failed_at is not None
    partial = await delivery(factory, run.id)
    assert partial.state == "partial"
    assert partial.errors == [f"account A-002 (company {companies['A-002']}): {failed.error}"]

    # Retried while the company is still unknown: only A-002 goes out, and fails once more.
    await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())
    assert sent_ids(hubspot, since=1) == [companies["A-002"]]
    assert (await pushes(factory))["A-002"].failures == 2
    assert (await delivery(factory, run.id)).state == "failed"  # everything it tried failed

    hubspot.companies.add(companies["A-002"])
    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())
    assert result == counts(candidates=1, pushed=1, unchanged=3, requests=1)
    assert sent_ids(hubspot, since=2) == [companies["A-002"]]
    accepted = (await pushes(factory))["A-002"]
    assert (accepted.crm_id, accepted.failures, accepted.error) == (companies["A-002"], 0, None)
    assert accepted.chi == (await accounts(factory))["A-002"].chi
    assert (await delivery(factory, run.id)).state == "done"


async def test_a_secondly_rate_limit_waits_what_retry_after_says_else_backs_off(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    companies = customers(3)
    hubspot.companies = set(companies.values())
    hubspot.secondly_limit_on = {1: 7, 2: None}  # the second 429 says nothing about waiting
    run = await scored_run(factory, tmp_path / "snapshot", companies)
    waits = Waits()

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=waits)

    assert result == counts(candidates=3, pushed=3, requests=3, rate_limited=2)
    assert [request.status for request in hubspot.received] == [429, 429, 200]
    assert hubspot.received[0].body == hubspot.received[2].body  # the same batch, sent again
    assert waits.seconds[0] == 7
    assert 2 <= waits.seconds[1] <= 6  # back-off of the second attempt: 4 s, with jitter
    assert len(waits.seconds) == 2
    assert {row.failures for row in (await pushes(factory)).values()} == {0}
    assert len(await pushes(factory)) == 3
    assert (await delivery(factory, run.id)).state == "done"


async def test_the_daily_limit_stops_the_push_and_the_rest_waits_for_the_next_run(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path, small_batches: int
) -> None:
    companies = customers(5)
    hubspot.companies = set(companies.values())
    hubspot.daily_limit_from = 2
    run = await scored_run(factory, tmp_path / "snapshot", companies)
    waits = Waits()

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=waits)

    assert result == counts(candidates=5, pushed=2, waiting=3, requests=2)
    assert [request.status for request in hubspot.received] == [200, 429]  # not retried
    assert waits.seconds == []
    stopped = await delivery(factory, run.id)
    assert stopped.state == "partial"
    assert stopped.errors == ["the CRM's daily API limit is reached; 3 customers wait for the next run"]
    assert set(await pushes(factory)) == {"A-000", "A-001"}  # the waiting ones did not fail: nothing recorded

    hubspot.daily_limit_from = None  # midnight at the CRM
    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())
    assert result == counts(candidates=3, pushed=3, unchanged=2, requests=2)
    assert sent_ids(hubspot, since=2) == [companies[f"A-00{number}"] for number in (2, 3, 4)]


async def test_an_unavailable_crm_fails_the_delivery_records_nothing_as_accepted_and_the_run_stands(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path, small_batches: int
) -> None:
    companies = customers(5)
    hubspot.companies = set(companies.values())
    hubspot.unavailable_from = 1
    run = await scored_run(factory, tmp_path / "snapshot", companies)
    waits = Waits()

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=waits)

    # The first batch is tried ATTEMPTS times, then the push stops: the others would wait as long.
    assert result == counts(candidates=5, failed=2, waiting=3, requests=ATTEMPTS)
    assert [request.status for request in hubspot.received] == [503] * ATTEMPTS
    assert set(sent_ids(hubspot)) == {companies["A-000"], companies["A-001"]}
    assert len(waits.seconds) == ATTEMPTS - 1
    assert all(2**attempt / 2 <= wait <= 2**attempt * 1.5 for attempt, wait in enumerate(waits.seconds, 1))
    failed = await delivery(factory, run.id)
    assert failed.state == "failed"
    assert failed.errors == [
        f"batch of 2 customers (A-000 … A-001): HTTP 503 SERVICE_UNAVAILABLE: Service Unavailable "
        f"(after {ATTEMPTS} attempts)",
        "the CRM is unavailable; 3 customers wait for the next run",
    ]
    recorded = await pushes(factory)
    assert set(recorded) == {"A-000", "A-001"}
    assert all(row.crm_id is None and row.pushed_at is None and row.failures == 1 for row in recorded.values())
    async with session_scope(factory) as session:
        assert await session.scalar(select(Run.state).where(Run.id == run.id)) == "succeeded"  # type: ignore[union-attr]

    # Back up, with one more 503 on the way: retried, and everyone goes out.
    hubspot.unavailable_from = None
    hubspot.unavailable_on = {ATTEMPTS + 1}
    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())
    assert result == counts(candidates=5, pushed=5, requests=4)
    assert {(row.failures, row.error) for row in (await pushes(factory)).values()} == {(0, None)}


async def test_more_than_100_inputs_are_refused_without_retry_and_the_next_batch_still_goes(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 400 fails its batch only: the CRM's message is kept, the same call is not made again."""
    monkeypatch.setattr(crm, "BATCH_SIZE", 150)  # more than HubSpot takes
    companies = customers(160)
    hubspot.companies = set(companies.values())
    run = await scored_run(factory, tmp_path / "snapshot", companies)

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())

    assert result == counts(candidates=160, pushed=10, failed=150, requests=2)
    assert [request.status for request in hubspot.received] == [400, 200]
    partial = await delivery(factory, run.id)
    assert partial.state == "partial"
    assert partial.errors == [
        "batch of 150 customers (A-000 … A-149): HTTP 400 VALIDATION_ERROR: Inputs must contain at most 100 items"
    ]
    recorded = await pushes(factory)
    assert recorded["A-149"].error == "HTTP 400 VALIDATION_ERROR: Inputs must contain at most 100 items"
    assert (recorded["A-150"].crm_id, recorded["A-150"].failures) == (companies["A-150"], 0)


async def test_customers_sharing_a_company_are_reported_and_not_sent(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    companies = customers(4) | {"A-003": "8100001"}  # A-001's company too
    hubspot.companies = set(companies.values())
    run = await scored_run(factory, tmp_path / "snapshot", companies)

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())

    assert result == counts(candidates=4, pushed=2, failed=2, requests=1)
    assert sent_ids(hubspot) == [companies["A-000"], companies["A-002"]]
    why = "company 8100001 is the CRM company of several customers (A-001, A-003); none of them is sent"
    assert (await delivery(factory, run.id)).errors == [
        f"account A-001 (company 8100001): {why}",
        f"account A-003 (company 8100001): {why}",
    ]
    assert (await pushes(factory))["A-003"].error == why


async def test_a_refused_token_is_not_retried_and_the_token_is_stored_and_logged_nowhere(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path, small_batches: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    companies = customers(5)
    hubspot.companies = set(companies.values())
    hubspot.echo_token = True  # the worst case: the CRM quotes the token back in its message
    secret = "pat-eu1-very-secret-token"
    run = await scored_run(factory, tmp_path / "snapshot", companies)

    result = await push_health(factory, run.id, Settings(crm_url=hubspot.url, crm_token=secret), sleep=Waits())

    assert result == counts(candidates=5, failed=2, waiting=3, requests=1)
    assert [(request.status, request.authorization) for request in hubspot.received] == [(401, f"Bearer {secret}")]
    refused = await delivery(factory, run.id)
    assert refused.state == "failed"
    assert refused.errors == [
        "batch of 2 customers (A-000 … A-001): HTTP 401 INVALID_AUTHENTICATION: Authentication credentials not "
        "found. The token 'Bearer [token]' is not valid.",
        "the CRM refused the token; 3 customers wait for the next run",
    ]
    stored = [row.error or "" for row in (await pushes(factory)).values()]
    assert stored and all("[token]" in error for error in stored)
    assert secret not in "\n".join([*stored, *refused.errors, caplog.text])


async def test_an_answer_too_large_to_read_fails_its_batch_and_is_not_read_further(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path, small_batches: int
) -> None:
    companies = customers(3)
    hubspot.companies = set(companies.values())
    hubspot.padding = 3 * crm.MAX_ANSWER  # a 200 of 3 MB: a proxy, or anything but HubSpot
    run = await scored_run(factory, tmp_path / "snapshot", companies)

    result = await push_health(factory, run.id, crm_settings(hubspot), sleep=Waits())

    # Each batch failed once, not retried (the same call would get the same answer), none accepted.
    assert result == counts(candidates=3, failed=3, requests=2)
    refused = await delivery(factory, run.id)
    assert refused.state == "failed"
    assert refused.errors[0] == (
        f"batch of 2 customers (A-000 … A-001): the CRM's answer (HTTP 200) is over {crm.MAX_ANSWER:,} bytes"
    )
    assert all(row.pushed_at is None and row.failures == 1 for row in (await pushes(factory)).values())


def answering(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def broken(request: httpx.Request) -> httpx.Response:
    raise RuntimeError(f"something unforeseen with {request.headers['authorization']}")


def redirected(request: httpx.Request) -> httpx.Response:
    return httpx.Response(302, headers={"Location": "https://elsewhere.example/login"}, text="<html>moved</html>")


@pytest.mark.parametrize(
    ("handler", "requests", "error"),
    [
        (unreachable, ATTEMPTS, f"the CRM did not answer (ConnectError) (after {ATTEMPTS} attempts)"),
        (redirected, 1, "HTTP 302 Found: <html>moved</html>"),
        (broken, 1, "the CRM write-back stopped: RuntimeError: something unforeseen with Bearer [token]"),
    ],
)
async def test_no_answer_a_redirect_or_anything_unforeseen_fails_the_delivery_and_never_raises(
    factory: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture, handler: Any, requests: int, error: str
) -> None:
    caplog.set_level(logging.DEBUG)
    run = await scored_run(factory, tmp_path / "snapshot", customers(3))
    calls: list[httpx.Request] = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return handler(request)

    settings = Settings(crm_url="https://crm.example", crm_token="pat-eu1-secret")
    async with answering(counting) as client:
        result = await push_health(factory, run.id, settings, client=client, sleep=Waits())
        assert not client.is_closed  # the caller's client stays the caller's

    assert result["requests"] == requests and result["pushed"] == 0
    assert len(calls) == requests  # a redirect is not followed
    assert {str(request.url) for request in calls} == {"https://crm.example/crm/v3/objects/companies/batch/update"}
    failed = await delivery(factory, run.id)
    assert failed.state == "failed"
    assert any(line.endswith(error) for line in failed.errors), failed.errors
    assert all(row.crm_id is None for row in (await pushes(factory)).values())
    assert "pat-eu1-secret" not in "\n".join([*failed.errors, caplog.text])


async def test_with_the_write_back_off_nothing_is_sent_and_the_delivery_says_off(
    factory: Factory, hubspot: FakeHubSpot, tmp_path: Path
) -> None:
    run = await scored_run(factory, tmp_path / "snapshot", customers(3))

    result = await push_health(factory, run.id, Settings(crm_url=None, crm_token=hubspot.token), sleep=Waits())

    assert result == {}
    assert hubspot.received == []
    off = await delivery(factory, run.id)
    assert (off.state, off.counts, off.errors) == ("off", {}, [])
    assert off.finished_at is not None
    assert await pushes(factory) == {}
