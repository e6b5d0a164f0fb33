"""The policy console over HTTP: drafts, validation, tests, dry-run, publish and roll back; runs; connectors."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connectors.demo import write_demo_snapshot
from server.db.models import Account, AuditEvent, Digest, PolicyPublication, Run, RunDelivery, RunPart, Task
from server.db.session import create_engine, session_factory
from server.services.after_run import deliver
from server.services.digests import CUT_SHORT
from server.services.runs import RunRequest, prepare_run, run_in_process
from server.services.tasks import TaskStatus, change_state
from server.web.access import CurrentUser, Role
from server.web.headers import EMAIL_PREVIEW_POLICY
from tests.conftest import POLICY_DIR
from tests.hubspot_fake import FakeHubSpot, serving
from tests.security.helpers import Browser, database, running, seed_users, settings_for
from tests.smtp import smtp_server

AS_OF = dt.date(2026, 12, 4)


@pytest.fixture
async def prepared(database_url: str, tmp_path: Path) -> tuple[str, Path]:
    """A database with one run over a small demo snapshot, and an ops user and a CSM."""
    folder = tmp_path / "snapshot"
    write_demo_snapshot(folder, accounts=40, seed=8, as_of=AS_OF)
    engine = create_engine(database_url)
    try:
        await run_in_process(session_factory(engine), RunRequest(folder=folder, policy_dir=POLICY_DIR))
    finally:
        await engine.dispose()
    await seed_users(
        database_url, ("ops@example.com", "ops"), ("csm@example.com", "csm"), ("viewer@example.com", "viewer")
    )
    return database_url, folder


def env(folder: Path) -> dict[str, str]:
    return {"CSM_POLICY_DIR": str(POLICY_DIR), "CSM_SNAPSHOT_DIR": str(folder)}


async def test_only_ops_and_admins_open_the_console(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    async with running(url, **env(folder)) as client:
        for email in ("csm@example.com", "viewer@example.com"):
            browser = Browser(client)
            await browser.login(email)
            for path in ("/console/policies", "/console/runs", "/console/connectors", "/api/console/runs"):
                assert (await browser.get(path)).status_code == 403, (email, path)
        ops = Browser(client)
        await ops.login("ops@example.com")
        page = await ops.get("/console/policies")
        assert page.status_code == 200
        assert "Published version" in page.text and "12 enabled of 12" in page.text


async def test_a_draft_is_edited_validated_tested_dry_run_and_published(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        created = await ops.post("/console/drafts", {"name": "Longer renewal horizon"})
        assert created.status_code == 303
        draft = created.headers["location"]
        rules = await ops.get(f"{draft}?file=rules.yaml")
        assert rules.status_code == 200 and "renewal-upcoming" in rules.text
        text = re.search(r'<textarea id="policy-text"[^>]*>(.*?)</textarea>', rules.text, re.S)
        assert text is not None
        original = (
            text[1]
            .replace("&#34;", '"')
            .replace("&#39;", "'")
            .replace("&gt;", ">")
            .replace("&lt;", "<")
            .replace("&amp;", "&")
        )

        # A typo is found on save, located and explained.
        broken = original.replace("0 <= days_to_renewal <= horizon_days", "0 <= days_to_renewl <= horizon_days")
        saved = await ops.post(f"{draft}/files", {"file": "rules.yaml", "text": broken}, headers={"hx-request": "true"})
        assert saved.status_code == 200
        assert "rules.yaml:28" in saved.text and "unknown name &#39;days_to_renewl&#39;" in saved.text
        assert "did you mean &#39;days_to_renewal&#39;" in saved.text

        # Fixed, with a longer horizon: valid; the policy tests now fail (a case pins 91 days).
        changed = original.replace("horizon_days: 90", "horizon_days: 120")
        saved = await ops.post(
            f"{draft}/files", {"file": "rules.yaml", "text": changed}, headers={"hx-request": "true"}
        )
        assert "Valid: 6 CHI sections, 12 rules" in saved.text
        tests = await ops.post(f"{draft}/test", headers={"hx-request": "true"})
        assert "failed" in tests.text and "renewal 91 days away does not fire" in tests.text
        refused = await ops.post(f"{draft}/publish", {"comment": "longer horizon"})
        assert refused.status_code == 400 and "policy test(s) fail" in refused.text

        # The dry-run reports the tasks that would appear.
        started = await ops.post(f"{draft}/dry-run", headers={"hx-request": "true"})
        job = re.search(r'hx-get="/console/dry-runs/([0-9a-f]+)"', started.text)
        assert job is not None
        for _ in range(200):
            status = (await ops.get(f"/api/console/dry-runs/{job[1]}")).json()
            if status["state"] != "running":
                break
            await asyncio.sleep(0.05)
        assert status["state"] == "done", status
        report = status["report"]
        assert report["customers"] == 40
        assert {rule["rule"] for rule in report["rules"] if rule["appear"]} <= {"renewal-upcoming", "chi-status-review"}
        assert report["appear"] >= 1 and report["disappear"] == 0
        page = await ops.get(f"/console/dry-runs/{job[1]}")
        assert "tasks would appear" in page.text

        # Keep the horizon, rename the rule, publish: a new version, audited with the hashes.
        cases = (await ops.get(f"{draft}?file=tests/commercial.yaml")).text
        assert "renewal 91 days away does not fire" in cases
        renamed = original.replace("name: Contract renewal upcoming", "name: Renewal coming up")
        await ops.post(f"{draft}/files", {"file": "rules.yaml", "text": renamed}, headers={"hx-request": "true"})
        published = await ops.post(f"{draft}/publish", {"comment": "clearer renewal titles"})
        assert published.status_code == 303, published.text
        assert published.headers["location"] == "/console/policies?published=1"
        history = await ops.get("/console/policies")
        assert "clearer renewal titles" in history.text
    async with database(url) as session:
        publications = list(await session.scalars(select(PolicyPublication).order_by(PolicyPublication.id)))
        assert [p.action for p in publications] == ["install", "publish"]
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "policy.published"))
        assert event is not None and event.actor == "ops@example.com"
        assert event.before is not None and event.after is not None
        assert event.before["content_hash"] != event.after["content_hash"]


async def test_a_version_is_rolled_back_to(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        draft = (await ops.post("/console/drafts", {"name": "bands"})).headers["location"]
        bands = (await ops.get(f"{draft}?file=bands.yaml")).text
        assert "colour" in bands
        new_bands = (
            'kind: bands\nbands:\n  - {name: Happy, min: 75, colour: "#1b6e38"}\n'
            '  - {name: At-Risk, min: 50, colour: "#b26a00"}\n  - {name: Critical, min: 0, colour: "#b3261e"}\n'
        )
        await ops.post(f"{draft}/files", {"file": "bands.yaml", "text": new_bands}, headers={"hx-request": "true"})
        assert (await ops.post(f"{draft}/publish", {"comment": "darker green"})).status_code == 303
        version_page = await ops.get("/console/versions/1")
        assert "Roll back to this version" in version_page.text and "#1f7a3f" in version_page.text
        rolled = await ops.post("/console/versions/1/rollback", {"comment": "the old green reads better"})
        assert rolled.status_code == 303
        again = await ops.post("/console/versions/1/rollback", {"comment": "twice"})
        assert again.status_code == 409
    async with database(url) as session:
        actions = [p.action for p in await session.scalars(select(PolicyPublication).order_by(PolicyPublication.id))]
        assert actions == ["install", "publish", "rollback"]


async def test_runs_are_listed_started_and_followed(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        page = await ops.get("/console/runs")
        assert page.status_code == 200 and "#1" in page.text and "succeeded" in page.text
        started = await ops.post("/console/runs", {"force": "on"})
        assert started.status_code == 303
        for _ in range(200):
            runs = (await ops.get("/api/console/runs")).json()
            if len(runs) == 2 and runs[0]["state"] == "succeeded":
                break
            await asyncio.sleep(0.05)
        assert runs[0]["state"] == "succeeded", runs
        assert runs[0]["trigger"] == "console" and runs[0]["counts"]["opened"] == 0
        # What goes out after a console run: here neither SMTP nor a CRM is configured.
        for _ in range(200):
            deliveries = (await ops.get(f"/api/console/runs/{runs[0]['id']}")).json()["deliveries"]
            if all(delivery["state"] == "off" for delivery in deliveries.values()):
                break
            await asyncio.sleep(0.05)
        assert {kind: delivery["state"] for kind, delivery in deliveries.items()} == {"digest": "off", "crm": "off"}
        detail = await ops.get(f"/console/runs/{runs[0]['id']}")
        assert "write customers" in detail.text
        assert "After the run" in detail.text and "Digest emails" in detail.text and "CRM write-back" in detail.text
        connectors = await ops.get("/console/connectors")
        assert connectors.status_code == 200 and "Morning digest" in connectors.text
        assert (await ops.get("/api/console/connectors")).json()["readable"] is True
    async with database(url) as session:
        assert len(list(await session.scalars(select(Run)))) == 2
        assert await session.scalar(select(AuditEvent).where(AuditEvent.action == "run.started")) is not None


async def test_a_run_read_in_parts_shows_how_far_the_reading_got(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    async with database(url) as session:
        run, _ = await prepare_run(session, RunRequest(folder=folder, policy_dir=POLICY_DIR, force=True, parts=2))
        run.state = "ingesting"
        await session.flush()
        read = await session.get(RunPart, (run.id, 1))
        assert read is not None
        read.state = "done"
        run_id = run.id
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        detail = await ops.get(f"/console/runs/{run_id}")
        assert "Reading the snapshot: 1 of 2 parts read." in detail.text
        assert 'hx-trigger="every 2s"' in detail.text  # followed until it ends
        listed = await ops.get("/console/runs")
        assert "ingesting</span> 1/2 parts" in listed.text
        shown = (await ops.get(f"/api/console/runs/{run_id}")).json()
        assert (shown["parts_total"], shown["parts_done"]) == (2, 1)


async def test_validate_api_reports_every_problem(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    files = {path.name: path.read_text() for path in POLICY_DIR.glob("*.yaml")}
    mistakes = files["rules.yaml"].count("level: High}")
    files["rules.yaml"] = files["rules.yaml"].replace("level: High}", "level: high}")
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        response = await ops.request(
            "POST", "/api/console/validate", json={"files": files}, headers={"x-csrftoken": await ops.csrf()}
        )
        body = response.json()
        assert response.status_code == 201 and body["valid"] is False
        assert len(body["problems"]) == mistakes > 1
        assert body["problems"][0]["message"] == "expected one of High, Medium, Low, got 'high'"


async def test_the_morning_list_preview_shows_a_csms_open_tasks_most_severe_first(prepared: tuple[str, Path]) -> None:
    url, folder = prepared

    def shown(text: str) -> tuple[dict[str, int], list[str]]:
        counts = dict(re.findall(r'severity-\w+">(High|Medium|Low)</span> (\d+)', text))
        rows = re.findall(r'<tr><td><span class="severity severity-\w+">(High|Medium|Low)</span>', text)
        return {level: int(n) for level, n in counts.items()}, rows

    async with database(url) as session:
        csm, task_id = (
            await session.execute(
                select(Account.csm, Task.id)
                .join(Task, Task.account_id == Account.id)
                .where(Task.active.is_(True), Task.severity == "High")
                .order_by(Task.id)
                .limit(1)
            )
        ).one()
        open_high = await session.scalar(
            select(func.count())
            .select_from(Task)
            .join(Account, Account.id == Task.account_id)
            .where(Task.active.is_(True), Task.severity == "High", Account.csm == csm)
        )
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        counts, rows = shown((await ops.get(f"/console/connectors?csm={csm}")).text)
        assert counts["High"] == open_high and sum(counts.values()) >= len(rows) > 0
        rank = {"High": 0, "Medium": 1, "Low": 2}
        assert [rank[level] for level in rows] == sorted(rank[level] for level in rows)
        async with database(url) as session:
            manager = CurrentUser(id=0, email="manager@example.com", name="", role=Role.MANAGER)
            for step in (TaskStatus.STARTED, TaskStatus.IN_PROGRESS, TaskStatus.FINISHED):
                await change_state(session, manager, task_id, step, today=dt.date.today())
            await session.commit()
        after, _ = shown((await ops.get(f"/console/connectors?csm={csm}")).text)
        assert after["High"] == open_high - 1  # a finished task is not on anyone's morning list


async def test_the_digest_preview_is_the_email_the_csm_gets(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    await seed_users(url, ("ana.keller@demo.csm", "csm"))
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        page = (await ops.get("/console/connectors?csm=ana.keller@demo.csm")).text
        assert "Your tasks for" in page and "(not sent: no user)" not in page
        assert 'href="/console/connectors/digest?csm=ana.keller%40demo.csm"' in page
        assert "no SMTP server is configured" in page and "no CRM is configured" in page
        # The CSMs of the data without a user get no digest, and the page says so.
        other = (await ops.get("/console/connectors?csm=ben.meyer@demo.csm")).text
        assert "(not sent: no user)" in other and "have no active CSM user" in other
        email = await ops.get("/console/connectors/digest?csm=ana.keller@demo.csm")
        assert email.status_code == 200 and email.headers["content-type"].startswith("text/html")
        assert email.headers["content-security-policy"] == EMAIL_PREVIEW_POLICY  # inline styles, nothing else
        assert "Good morning Ana" in email.text and "/go/" in email.text and "<script" not in email.text
        assert (await ops.get("/console/connectors/digest?csm=nobody@demo.csm")).status_code == 404
        csm = Browser(client)
        await csm.login("ana.keller@demo.csm")
        assert (await csm.get("/console/connectors/digest?csm=ana.keller@demo.csm")).status_code == 403
        await csm.post("/settings/digest", {})  # Ana turns her morning email off
        page = (await ops.get("/console/connectors?csm=ana.keller@demo.csm")).text
        assert "(not sent: the CSM turned it off)" in page and "Turned off in their settings: ana.keller" in page


async def test_connectors_show_what_went_out_and_what_the_smtp_server_and_the_crm_refused(
    prepared: tuple[str, Path],
) -> None:
    url, folder = prepared
    await seed_users(url, ("ana.keller@demo.csm", "csm"), ("ben.meyer@demo.csm", "csm"))
    async with database(url) as session:
        run_id = await session.scalar(select(Run.id))
        companies = {crm_id for crm_id in await session.scalars(select(Account.crm_id)) if crm_id}
    refused_company = sorted(companies)[0]
    engine = create_engine(url)
    try:
        with smtp_server() as mailbox, serving(FakeHubSpot(companies=companies - {refused_company})) as hubspot:
            mailbox.refused.add("ben.meyer@demo.csm")
            settings = settings_for(
                url,
                CSM_POLICY_DIR=str(POLICY_DIR),
                CSM_CRM_URL=hubspot.url,
                CSM_CRM_TOKEN=hubspot.token,
                **mailbox.env(),
            )
            await deliver(session_factory(engine), run_id, settings)
    finally:
        await engine.dispose()
    async with running(url, **env(folder)) as client:
        ops = Browser(client)
        await ops.login("ops@example.com")
        status = (await ops.get("/api/console/deliveries")).json()
        assert status["last_digest"]["run_id"] == run_id and status["last_digest"]["state"] == "partial"
        assert status["last_digest"]["counts"] == {"sent": 1, "failed": 1}
        assert [(day["sent"], day["failed"]) for day in status["digest_days"]] == [(1, 1)]
        assert status["last_crm"]["state"] == "partial"
        assert [refusal["crm_id"] for refusal in status["crm_refusals"]] == [refused_company]
        assert status["csms_without_user"] == ["carla.schmidt@demo.csm"]
        page = (await ops.get("/console/connectors")).text
        assert "ben.meyer@demo.csm: SMTPRecipientsRefused" in page
        # Refused, and in one process nothing retries it: it is listed to send again by hand.
        (refused_digest,) = status["digests_to_check"]
        assert (refused_digest["recipient"], refused_digest["state"]) == ("ben.meyer@demo.csm", "failed")
        assert f"/console/connectors/digests/{refused_digest['id']}/send" in page
        assert f"<code>{refused_company}</code>" in page and "OBJECT_NOT_FOUND" in page
        digest = (await ops.get("/api/console/digest?csm=ana.keller@demo.csm")).json()
        assert digest["subject"].startswith("Your tasks for") and digest["deltas"]["High"] is None  # no day before
        assert len(digest["lines"]) == min(50, digest["counts"]["Total"])
        assert (await ops.get("/api/console/digest?csm=nobody@demo.csm")).status_code == 404


async def test_ops_send_again_a_digest_that_was_cut_short_once_and_it_is_audited(prepared: tuple[str, Path]) -> None:
    url, folder = prepared
    ids = await seed_users(url, ("ana.keller@demo.csm", "csm"))
    async with database(url) as session:
        run_id = await session.scalar(select(Run.id))
        assert run_id is not None
        cut_short = Digest(
            day=dt.date.today(), user_id=ids["ana.keller@demo.csm"], recipient="ana.keller@demo.csm", run_id=run_id
        )
        cut_short.state, cut_short.attempts = "sending", 1
        session.add(cut_short)
        await session.flush()
        digest_id = cut_short.id
        session.add(  # what the run's digest job recorded
            RunDelivery(
                run_id=run_id,
                kind="digest",
                state="partial",
                counts={"sent": 3, "unconfirmed": 1},
                errors=[f"ana.keller@demo.csm: {CUT_SHORT}"],
                started_at=dt.datetime.now(dt.UTC),
            )
        )
    with smtp_server() as mailbox:
        async with running(url, **env(folder), **mailbox.env()) as client:
            ops = Browser(client)
            await ops.login("ops@example.com")
            page = (await ops.get("/console/connectors")).text
            assert "To check" in page and f"/console/connectors/digests/{digest_id}/send" in page
            csm = Browser(client)
            await csm.login("ana.keller@demo.csm")
            assert (await csm.post(f"/console/connectors/digests/{digest_id}/send")).status_code == 403
            assert mailbox.messages == []
            sent = await ops.post(f"/console/connectors/digests/{digest_id}/send")
            assert sent.status_code == 303 and sent.headers["location"] == "/console/connectors?resent=sent"
            assert [message["To"] for message in mailbox.messages] == ["ana.keller@demo.csm"]
            assert "The digest was sent again." in (await ops.get("/console/connectors?resent=sent")).text
            again = await ops.post(f"/console/connectors/digests/{digest_id}/send")  # sent now: not by hand again
            assert again.status_code == 409 and len(mailbox.messages) == 1
    async with database(url) as session:
        digest = await session.get(Digest, digest_id)
        assert digest is not None and (digest.state, digest.attempts) == ("sent", 1)
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "digest.sent_again"))
        assert event is not None and event.actor == "ops@example.com" and event.before["state"] == "sending"
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None
        assert (delivery.state, delivery.counts, delivery.errors) == ("done", {"sent": 4, "unconfirmed": 0}, [])
