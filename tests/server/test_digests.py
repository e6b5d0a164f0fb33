"""The CSMs' morning digest, sent through a real SMTP server: one email per CSM per day with
exactly their dashboard's open tasks, sent once whatever is retried, and deep links that lead to
the customer's tab without ever signing anyone in."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.demo import write_demo_snapshot
from server.db.models import Account, Digest, RunDelivery, Task, TaskState, User
from server.db.session import create_engine, session_factory, session_scope
from server.services import digests
from server.services.digests import (
    LINK_SALT,
    LISTED_TASKS,
    DigestContent,
    DigestLine,
    deep_link,
    render,
    send_digests,
)
from server.services.runs import RunRequest, run_in_process
from server.services.tasks import SEVERITY_ORDER, TaskStatus, change_state, open_task_sql
from server.settings import Settings
from server.web.access import CurrentUser, Role
from tests.conftest import POLICY_DIR
from tests.security.helpers import SECRET_KEY, Browser, location, running, seed_users, settings_for
from tests.smtp import Mailbox, smtp_server

AS_OF = dt.date(2026, 12, 4)
ANA, BEN, CARLA = "ana.keller@demo.csm", "ben.meyer@demo.csm", "carla.schmidt@demo.csm"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
async def book(database_url: str, tmp_path: Path) -> tuple[str, Path, int, dict[str, int]]:
    """A run over 40 demo customers of three CSMs; Ana and Ben are users, Carla's user is
    deactivated, and one CSM user has no customers. Returns (url, folder, run id, user ids)."""
    folder = tmp_path / "snapshot"
    write_demo_snapshot(folder, accounts=40, seed=8, as_of=AS_OF)
    engine = create_engine(database_url)
    try:
        run, _ = await run_in_process(session_factory(engine), RunRequest(folder=folder, policy_dir=POLICY_DIR))
    finally:
        await engine.dispose()
    ids = await seed_users(
        database_url,
        (ANA, "csm"),
        (BEN, "csm"),
        (CARLA, "csm"),
        ("idle@demo.csm", "csm"),
        ("manager@demo.csm", "manager"),
    )
    engine = create_engine(database_url)
    try:
        async with session_scope(session_factory(engine)) as session:
            await session.execute(update(User).where(User.email == CARLA).values(active=False))
    finally:
        await engine.dispose()
    return database_url, folder, run.id, ids


@pytest.fixture
async def factory(book: tuple[str, Path, int, dict[str, int]]) -> Any:
    engine = create_engine(book[0])
    yield session_factory(engine)
    await engine.dispose()


def settings(url: str, mailbox: Mailbox | None) -> Settings:
    return settings_for(url, CSM_POLICY_DIR=str(POLICY_DIR), **(mailbox.env() if mailbox else {}))


async def open_tasks(factory: async_sessionmaker[AsyncSession], csm: str, day: dt.date = AS_OF) -> list[Task]:
    """The CSM's open tasks, as their dashboard counts them."""
    async with session_scope(factory) as session:
        rows = await session.scalars(
            select(Task)
            .join(Account, Account.id == Task.account_id)
            .outerjoin(TaskState, TaskState.task_id == Task.id)
            .where(Account.csm == csm, open_task_sql(day))
        )
        return list(rows)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    # SMTP carries CRLF line ends; compare lines as written.
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def listed(text: str) -> list[tuple[str, str]]:
    """(severity, title) of the tasks a digest's plain text lists, in order."""
    return [(level.title(), title) for level, title in re.findall(r"^\[(HIGH|MEDIUM|LOW)\] (.+)$", text, re.M)]


def links(html: str) -> list[str]:
    return re.findall(r'href="(http://127\.0\.0\.1:8000/go/[^"]+)"', html)


async def test_each_csm_gets_one_digest_listing_exactly_their_open_tasks(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    url, _folder, run_id, _ids = book
    outcomes = await send_digests(factory, run_id, settings(url, mailbox), AS_OF)
    assert outcomes == {"sent": 2}
    # Ana and Ben; not Carla (deactivated), not the CSM without customers, not the manager.
    assert sorted(message["To"] for message in mailbox.messages) == [ANA, BEN]
    for csm in (ANA, BEN):
        (message,) = mailbox.to(csm)
        text, html = parts(message)
        assert message.get_content_type() == "multipart/alternative"
        expected = await open_tasks(factory, csm)
        assert 0 < len(expected) <= 50  # all of them fit in one digest
        assert sorted(listed(text)) == sorted((task.severity, task.title) for task in expected)
        ranks = [SEVERITY_ORDER[severity] for severity, _title in listed(text)]
        assert ranks == sorted(ranks)  # most severe first
        counts = {level: sum(task.severity == level for task in expected) for level in ("High", "Medium", "Low")}
        assert message["Subject"].endswith(f"{counts['High']} High, {counts['Medium']} Medium, {counts['Low']} Low")
        # The other CSMs' customers are nowhere in it.
        async with session_scope(factory) as session:
            others = list(await session.scalars(select(Account.name).where(Account.csm != csm)))
            own_tasks = {task.account_id for task in expected}
        assert not [name for name in others if name in text or name in html]
        # Every task has a button; each leads to its customer's Tasks tab.
        targets = [
            URLSafeTimedSerializer(SECRET_KEY, salt=LINK_SALT).loads(urlsplit(link).path.removeprefix("/go/"))
            for link in links(html)
        ]
        assert len(targets) == len(expected)
        assert {target["p"].split("/")[2] for target in targets} == own_tasks
        assert all(re.fullmatch(r"/customers/[^/]+/tasks#task-[0-9a-f]{32}", target["p"]) for target in targets)
        assert "style=" in html and "<style" not in html.split("</head>")[-1]  # styles inlined for mail clients
    async with session_scope(factory) as session:
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None
        assert (delivery.state, delivery.counts, delivery.errors) == ("done", {"sent": 2}, [])


async def test_a_retried_job_sends_nothing_twice_and_a_refused_digest_goes_out_once_the_server_takes_it(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    url, _folder, run_id, _ids = book
    mailbox.refused.add(BEN)
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"sent": 1, "failed": 1}
    async with session_scope(factory) as session:
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None and delivery.state == "partial"
        assert delivery.errors and delivery.errors[0].startswith(f"{BEN}: SMTPRecipientsRefused")
    # The job again, the server still refusing: Ana's is not sent a second time.
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"skipped": 1, "failed": 1}
    mailbox.refused.clear()
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"skipped": 1, "sent": 1}
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"skipped": 2}
    assert len(mailbox.to(ANA)) == 1 and len(mailbox.to(BEN)) == 1
    async with session_scope(factory) as session:
        rows = {digest.recipient: digest for digest in await session.scalars(select(Digest))}
        assert (rows[BEN].state, rows[BEN].attempts, rows[BEN].error) == ("sent", 3, None)
        assert (rows[ANA].state, rows[ANA].attempts) == ("sent", 1)
        assert rows[ANA].message_id == mailbox.to(ANA)[0]["Message-ID"]
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None and (delivery.state, delivery.errors) == ("done", [])


async def test_a_digest_whose_sending_was_cut_short_is_not_sent_again_but_reported(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    """A worker that died between the SMTP server's answer and the record: plain SMTP cannot
    say whether the email went out, so it is left to a person rather than risk a second one."""
    url, _folder, run_id, ids = book
    async with session_scope(factory) as session:
        session.add(Digest(day=AS_OF, user_id=ids[BEN], recipient=BEN, run_id=run_id, state="sending", attempts=1))
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"sent": 1, "skipped": 1}
    assert mailbox.to(BEN) == []
    async with session_scope(factory) as session:
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None and delivery.state == "partial"
        assert delivery.errors == [f"{BEN}: the sending was cut short and not confirmed; not sent again"]


async def test_a_digest_whose_answer_never_came_is_left_to_a_person_not_sent_twice(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    """The SMTP server took Ben's digest, then the line dropped before its answer: to the sender
    that is the same as a failure before it, so only a person can tell. Retries leave it alone."""
    url, _folder, run_id, _ids = book
    mailbox.hang_up.add(BEN)
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"sent": 1, "unconfirmed": 1}
    mailbox.hang_up.clear()
    assert await send_digests(factory, run_id, settings(url, mailbox), AS_OF) == {"skipped": 2}
    assert len(mailbox.to(BEN)) == 1  # it had arrived: a second would have been a double
    async with session_scope(factory) as session:
        digest = await session.scalar(select(Digest).where(Digest.recipient == BEN))
        assert digest is not None and digest.state == "sending" and digest.error is not None
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None and delivery.state == "partial"
        assert delivery.errors == [
            f"{BEN}: the sending was cut short and not confirmed; not sent again ({digest.error})"
        ]


async def test_the_counters_compare_with_the_csms_previous_digest(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    url, _folder, run_id, _ids = book
    await send_digests(factory, run_id, settings(url, mailbox), AS_OF)
    first_text, _ = parts(mailbox.to(ANA)[0])
    assert "(no earlier digest)" in first_text
    first_listed = Counter(listed(first_text))
    high = [task for task in await open_tasks(factory, ANA) if task.severity == "High"]
    assert high, "the demo book has a High task for Ana"
    async with session_scope(factory) as session:
        manager = CurrentUser(id=0, email="manager@demo.csm", name="", role=Role.MANAGER)
        for step in (TaskStatus.STARTED, TaskStatus.IN_PROGRESS, TaskStatus.FINISHED):
            await change_state(session, manager, high[0].id, step, today=AS_OF)
    next_day = AS_OF + dt.timedelta(days=1)
    await send_digests(factory, run_id, settings(url, mailbox), next_day)
    text, html = parts(mailbox.to(ANA)[1])
    assert re.search(r"^  High +\d+   down 1$", text, re.M)
    assert re.search(r"^  Total +\d+   down 1$", text, re.M)
    assert re.search(r"^  Medium +\d+   unchanged$", text, re.M)
    assert "&#9660; 1" in html or "▼ 1" in html
    finished = (high[0].severity, high[0].title)
    assert Counter(listed(text))[finished] == first_listed[finished] - 1


async def test_customer_data_in_a_digest_is_escaped(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    url, _folder, run_id, _ids = book
    (task, *_rest) = await open_tasks(factory, ANA)
    async with session_scope(factory) as session:
        hostile = '<img src=x onerror=alert(1)>{{7*7}}"'
        await session.execute(update(Account).where(Account.id == task.account_id).values(name=hostile))
    await send_digests(factory, run_id, settings(url, mailbox), AS_OF)
    text, html = parts(mailbox.to(ANA)[0])
    # Escaped, and data is never read as a template ({{7*7}} stays as it is).
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in html
    assert hostile in text  # plain text is not HTML: shown as it is


async def test_digests_that_break_off_say_so_on_the_delivery_and_let_the_job_retry(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _folder, run_id, _ids = book

    async def database_gone(*_args: Any) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(digests, "prepare_digests", database_gone)
    with pytest.raises(ConnectionError):
        await send_digests(factory, run_id, settings(url, mailbox), AS_OF)
    async with session_scope(factory) as session:
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None
        assert (delivery.state, delivery.errors) == ("failed", ["ConnectionError: the database went away"])


async def test_without_an_smtp_server_nothing_is_sent_and_the_delivery_says_off(
    book: tuple[str, Path, int, dict[str, int]], factory: Any
) -> None:
    url, _folder, run_id, _ids = book
    assert await send_digests(factory, run_id, settings(url, None), AS_OF) == {}
    async with session_scope(factory) as session:
        delivery = await session.get(RunDelivery, (run_id, "digest"))
        assert delivery is not None and delivery.state == "off"
        assert list(await session.scalars(select(Digest))) == []


# ── the deep links ──────────────────────────────────────────────────────────────────────


async def test_a_deep_link_leads_to_the_customer_tab_through_sign_in_and_never_signs_in(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    url, folder, run_id, _ids = book
    await send_digests(factory, run_id, settings(url, mailbox), AS_OF)
    _text, html = parts(mailbox.to(ANA)[0])
    link = urlsplit(links(html)[0]).path
    async with running(url, CSM_POLICY_DIR=str(POLICY_DIR), CSM_SNAPSHOT_DIR=str(folder)) as client:
        stranger = Browser(client)
        followed = await stranger.get(link)
        assert followed.status_code == 303
        target = location(followed)
        assert re.fullmatch(r"/customers/[^/]+/tasks#task-[0-9a-f]{32}", target)
        tab = target.split("#")[0]
        page = await stranger.get(tab)
        assert page.status_code == 302 and location(page).startswith("/login?next=")
        assert stranger.session is None or (await stranger.get("/dashboard")).status_code != 200
        ana = Browser(client)
        await ana.login(ANA, next=tab)
        assert (await ana.get(location(await ana.get(link)).split("#")[0])).status_code == 200
        ben = Browser(client)
        await ben.login(BEN)
        assert (await ben.get(location(await ben.get(link)).split("#")[0])).status_code == 404  # not his customer


def signed(path: str = "/customers/A/tasks", key: str = SECRET_KEY, salt: str = LINK_SALT, **options: Any) -> str:
    return URLSafeTimedSerializer(key, salt=salt, **options).dumps({"u": 1, "p": path})


def altered(token: str) -> str:
    """The token with its last three characters changed (whole bytes of the signature)."""
    return token[:-3] + ("xyz" if token.endswith("abc") else "abc")


@pytest.mark.parametrize(
    ("make", "status"),
    [
        pytest.param(lambda: signed("/admin/users"), 404, id="not-a-customer-page"),
        pytest.param(lambda: signed(key="another key"), 404, id="another-key"),
        pytest.param(lambda: signed(salt="csm-set-password"), 404, id="another-salt"),
        pytest.param(lambda: altered(signed()), 404, id="altered"),
        pytest.param(lambda: signed(signer=EightDaysAgo), 410, id="expired"),
    ],
)
async def test_a_deep_link_that_is_forged_altered_or_old_leads_nowhere(sqlite_url: str, make: Any, status: int) -> None:
    async with running(sqlite_url) as client:
        response = await Browser(client).get(f"/go/{make()}")
        assert response.status_code == status and "location" not in response.headers
        assert ("expired" if status == 410 else "not valid") in response.text


class EightDaysAgo(TimestampSigner):
    """Signs as if it were eight days ago (the links live seven)."""

    def get_timestamp(self) -> int:
        return super().get_timestamp() - 8 * 86_400


def test_a_full_digest_of_long_texts_stays_under_gmails_clipping_size() -> None:
    """Gmail cuts an email's HTML after 102 KB ("[Message clipped]"): the tasks further down and
    their buttons would be hidden. 50 tasks of long titles, descriptions and names fit."""
    settings = settings_for("sqlite+aiosqlite:///:memory:")
    link = deep_link(settings, 123_456, "/customers/" + "c" * 40 + "/tasks#task-" + "0" * 32)
    line = DigestLine(
        severity="Medium",
        title="t" * 100,
        description="d" * 200,
        customer="n" * 80,
        chi=29,
        band="Critical",
        band_colour="#b3261e",
        why="w" * 120,
        due_on=AS_OF,
        overdue=True,
        link=link,
    )
    counts = {"High": 0, "Medium": 60, "Low": 0, "Total": 60}
    content = DigestContent("Ana", ANA, AS_OF, counts, dict.fromkeys(counts, 1), [line] * LISTED_TASKS, 10, "/")
    text, html = render(content)
    assert html.count(link) == LISTED_TASKS and text.count(link) == LISTED_TASKS
    assert len(html.encode()) < 102 * 1024


async def test_a_csm_turns_the_morning_email_off_and_on_in_settings(
    book: tuple[str, Path, int, dict[str, int]], factory: Any, mailbox: Mailbox
) -> None:
    url, folder, run_id, _ids = book
    async with running(url, CSM_POLICY_DIR=str(POLICY_DIR), CSM_SNAPSHOT_DIR=str(folder)) as client:
        ana = Browser(client)
        await ana.login(ANA)
        page = (await ana.get("/settings")).text
        assert "Morning email" in page and 'name="digest" checked' in page
        saved = await ana.post("/settings/digest", {})  # the box unticked
        assert saved.status_code == 303 and location(saved) == "/settings?digest=off#digest"
        page = (await ana.get("/settings?digest=off")).text
        assert 'name="digest" checked' not in page and "no morning email from the next run on" in page
        manager = Browser(client)
        await manager.login("manager@demo.csm")
        assert "Morning email" not in (await manager.get("/settings")).text  # only CSMs get one
        await send_digests(factory, run_id, settings(url, mailbox), AS_OF)
        assert [message["To"] for message in mailbox.messages] == [BEN]
        assert (await ana.post("/settings/digest", {"digest": "on"})).status_code == 303
        await send_digests(factory, run_id, settings(url, mailbox), AS_OF + dt.timedelta(days=1))
        assert sorted(message["To"] for message in mailbox.messages) == [ANA, BEN, BEN]
