"""The CSMs' morning digest: one email per CSM per day, after the run, sent once.

Each CSM's digest is built with the CSM Dashboard's own queries (`services.tasks.counters` and
`list_tasks`, in the CSM's scope), so it lists exactly the tasks the dashboard will show: their
open tasks by severity, each with a button to the customer's Tasks tab, and the four counters
with their change since the CSM's previous digest.

Sent once: a `digest` row per (day, CSM) is the outbox. A job claims a row (pending or failed →
sending) before it talks to the SMTP server and marks it sent after; a retried job skips what is
sent. A row left in "sending" (the worker died between the server's answer and the mark) is not
sent again without a person: the console lists it. Plain SMTP has no way to ask whether a
message went through, so that window is the one place a digest could be lost rather than doubled.

The buttons are signed, expiring links (`/go/<token>`, itsdangerous): navigation, never a sign-in.
Following one leads to the customer's tab, through the sign-in page when there is no session.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.base import utcnow
from server.db.models import Account, Digest, RunDelivery, User
from server.db.session import session_scope
from server.db.upsert import upsert
from server.errors import Conflict
from server.services import mail
from server.services.catalog import Catalog, load_catalog
from server.services.deliveries import KEPT_ERRORS, finish_delivery, start_delivery
from server.services.preferences import digest_turned_off
from server.services.tasks import TaskQuery, counters, list_tasks
from server.settings import Settings
from server.web.access import CurrentUser, Role

LINK_SALT = "digest-link"
LISTED_TASKS = 50  # the rest are a click away on the dashboard
MAX_ATTEMPTS = 3  # per digest, over the job's retries
COUNTERS = ("High", "Medium", "Low", "Total")
CUT_SHORT = "the sending was cut short and not confirmed; not sent again"

Factory = async_sessionmaker[AsyncSession]


class LinkInvalid(Exception):
    """The deep link was not made by this portal (or was altered)."""


class LinkExpired(Exception):
    """The deep link is genuine but older than the configured number of days."""


# ── deep links ──────────────────────────────────────────────────────────────────────────


def _signer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret(), salt=LINK_SALT)


def deep_link(settings: Settings, user_id: int, path: str) -> str:
    """An absolute, signed link to a page of the portal, for one user's email."""
    token = _signer(settings).dumps({"u": user_id, "p": path})
    return f"{settings.base_url.rstrip('/')}/go/{token}"


def link_target(settings: Settings, token: str) -> str:
    """The portal path a deep link leads to; LinkExpired or LinkInvalid if it may not be followed."""
    try:
        payload = _signer(settings).loads(token, max_age=settings.digest_link_days * 86_400)
    except SignatureExpired:
        raise LinkExpired from None
    except BadSignature:
        raise LinkInvalid from None
    path = payload.get("p") if isinstance(payload, dict) else None
    if not isinstance(path, str) or not path.startswith("/customers/"):
        raise LinkInvalid
    return path


# ── what a digest says ──────────────────────────────────────────────────────────────────


@dataclass
class DigestLine:
    severity: str
    title: str
    description: str
    customer: str
    chi: int | None
    band: str | None
    band_colour: str
    why: str  # the customer's first "Why not 100" line
    due_on: dt.date
    overdue: bool
    link: str


@dataclass
class DigestContent:
    name: str  # "" when the user has none: the greeting goes without
    recipient: str
    day: dt.date
    counts: dict[str, int]
    deltas: dict[str, int | None]  # None: no earlier digest to compare with
    lines: list[DigestLine]
    more: int  # open tasks not listed
    dashboard_url: str
    subject: str = field(init=False)

    def __post_init__(self) -> None:
        summary = ", ".join(f"{self.counts[level]} {level}" for level in COUNTERS[:3])
        self.subject = f"Your tasks for {self.day:%a %-d %b}: {summary}"


def as_recipient(user: User) -> CurrentUser:
    return CurrentUser(id=user.id, email=user.email, name=user.name, role=Role(user.role))


async def build_digest(
    session: AsyncSession,
    viewer: CurrentUser,
    day: dt.date,
    settings: Settings,
    catalog: Catalog,
    previous: dict[str, int] | None = None,
) -> DigestContent:
    """What a CSM's digest says on `day`: the dashboard's counters and open tasks, in their scope."""
    counted = await counters(session, viewer, day)
    counts = {"High": counted.high, "Medium": counted.medium, "Low": counted.low, "Total": counted.total}
    page = await list_tasks(session, viewer, TaskQuery(per_page=LISTED_TASKS), day, catalog.rule_names())
    reasons: dict[str, Any] = dict(
        (
            await session.execute(
                select(Account.id, Account.reasons).where(Account.id.in_({item.account_id for item in page.items}))
            )
        ).all()
    )
    lines = [
        DigestLine(
            severity=item.severity,
            title=item.title,
            description=item.description,
            customer=item.account_name,
            chi=item.account_chi,
            band=item.account_band,
            band_colour=catalog.band_colour(item.account_band),
            why=_first_reason(reasons.get(item.account_id)),
            due_on=item.due_on,
            overdue=item.overdue,
            link=deep_link(settings, viewer.id, f"/customers/{quote(item.account_id, safe='')}/tasks#task-{item.id}"),
        )
        for item in page.items
    ]
    return DigestContent(
        name=viewer.name,
        recipient=viewer.email,
        day=day,
        counts=counts,
        deltas={level: counts[level] - previous[level] if previous else None for level in COUNTERS},
        lines=lines,
        more=max(0, page.total - len(lines)),
        dashboard_url=f"{settings.base_url.rstrip('/')}/dashboard",
    )


def _first_reason(reasons: Any) -> str:
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict):
        return str(reasons[0].get("text", ""))
    return ""


def render(content: DigestContent) -> tuple[str, str]:
    """The digest as plain text and as HTML with its styles inlined."""
    return mail.render("digest", digest=content)


def email_message(content: DigestContent, settings: Settings, message_id: str) -> EmailMessage:
    return mail.email_message(settings, content.recipient, content.subject, *render(content), message_id)


# ── sending, once ───────────────────────────────────────────────────────────────────────


async def prepare_digests(factory: Factory, run_id: int, day: dt.date) -> None:
    """One outbox row per active CSM with customers who did not turn the digest off, for `day`
    (rows already there are kept)."""
    async with session_scope(factory) as session:
        with_customers = select(Account.csm).distinct().scalar_subquery()
        recipients = await session.execute(
            select(User.id, User.email).where(
                User.active.is_(True), User.role == Role.CSM.value, User.email.in_(with_customers)
            )
        )
        turned_off = await digest_turned_off(session)
        rows = [
            {"day": day, "user_id": user_id, "recipient": address, "run_id": run_id, "state": "pending"}
            for user_id, address in recipients
            if address not in turned_off
        ]
        await upsert(session, Digest, rows, ("day", "user_id"))


CLAIMABLE = or_(Digest.state == "pending", Digest.state == "failed") & (Digest.attempts < MAX_ATTEMPTS)


async def _claim(factory: Factory, digest_id: int) -> bool:
    async with session_scope(factory) as session:
        claimed = await session.execute(
            update(Digest)
            .where(Digest.id == digest_id, CLAIMABLE)
            .values(state="sending", attempts=Digest.attempts + 1, claimed_at=utcnow())
        )
        return bool(claimed.rowcount)  # type: ignore[attr-defined]


async def previous_counts(session: AsyncSession, user_id: int, day: dt.date) -> dict[str, int] | None:
    counts = await session.scalar(
        select(Digest.counts)
        .where(Digest.user_id == user_id, Digest.day < day, Digest.state == "sent")
        .order_by(Digest.day.desc())
        .limit(1)
    )
    return counts if counts and all(level in counts for level in COUNTERS) else None


async def send_digest(factory: Factory, digest_id: int, settings: Settings, catalog: Catalog) -> str:
    """Send one outbox row unless it is sent, being sent, or out of attempts. Returns the outcome:
    sent, skipped, failed (worth another attempt) or unconfirmed (left to a person)."""
    async with session_scope(factory) as session:
        digest = await session.scalar(select(Digest).where(Digest.id == digest_id, CLAIMABLE))
        if digest is None:
            return "skipped"
        user = await session.get(User, digest.user_id)
        assert user is not None
        previous = await previous_counts(session, user.id, digest.day)
        # Built before the claim: a failure here leaves the row as it was, not "cut short".
        content = await build_digest(session, as_recipient(user), digest.day, settings, catalog, previous)
    if not await _claim(factory, digest_id):
        return "skipped"  # another job took it meanwhile
    message_id = mail.message_id(settings, f"digest.{content.day.isoformat()}.{digest_id}")
    outcome, error = await mail.send_once(email_message(content, settings, message_id), settings)
    if outcome == "failed":
        await _set_digest(factory, digest_id, state="failed", error=error)
    elif outcome == "unconfirmed":
        await _set_digest(factory, digest_id, error=error)  # stays "sending"
    else:
        sent = {"sent_at": utcnow(), "counts": content.counts, "message_id": message_id, "error": None}
        await _set_digest(factory, digest_id, state="sent", **sent)
    return outcome


# Digests a person may send again: cut short (no job sends them again) or refused (in one process
# nothing retries them; on workers the job's retries may still be coming, and a claim keeps the
# two from doubling it).
NEEDS_A_PERSON = Digest.state.in_(("sending", "failed"))


async def release_digest(session: AsyncSession, digest_id: int) -> dict[str, Any]:
    """A person's decision to send a digest again: one cut short and not confirmed, or one the
    SMTP server refused. It goes back to pending with fresh attempts (Conflict for any other
    digest). Returns what it was, for the audit log."""
    digest = await session.scalar(select(Digest).where(Digest.id == digest_id, NEEDS_A_PERSON))
    if digest is None:
        raise Conflict("only a digest cut short, or refused by the SMTP server, can be sent again by hand")
    before = {"state": digest.state, "attempts": digest.attempts, "error": digest.error}
    before.update(recipient=digest.recipient, day=digest.day.isoformat())
    digest.state, digest.attempts, digest.error = "pending", 0, None
    await session.flush()
    return before


async def _set_digest(factory: Factory, digest_id: int, **values: Any) -> None:
    async with session_scope(factory) as session:
        await session.execute(update(Digest).where(Digest.id == digest_id).values(**values))


async def send_digests(factory: Factory, run_id: int, settings: Settings, day: dt.date | None = None) -> Counter[str]:
    """After a run: every CSM's digest for today, each sent once; recorded as the run's delivery.

    Returns the outcomes counted (sent, skipped, failed); "failed" ones are worth a retry."""
    day = day or dt.datetime.now(settings.timezone).date()
    outcomes: Counter[str] = Counter()
    await start_delivery(factory, run_id, "digest")
    if settings.smtp_host is None:
        await finish_delivery(factory, run_id, "digest", outcomes, [], state="off")
        return outcomes
    try:
        await _send_day(factory, run_id, settings, day, outcomes)
    except Exception as exc:  # the delivery says so (not "running" for ever); the job may retry
        await finish_delivery(factory, run_id, "digest", outcomes, [f"{type(exc).__name__}: {exc}"], state="failed")
        raise
    return outcomes


async def _send_day(factory: Factory, run_id: int, settings: Settings, day: dt.date, outcomes: Counter[str]) -> None:
    await prepare_digests(factory, run_id, day)
    async with session_scope(factory) as session:
        catalog = await load_catalog(session, settings.policy_dir)
        digest_ids = list(await session.scalars(select(Digest.id).where(Digest.day == day).order_by(Digest.id)))
    for digest_id in digest_ids:
        outcomes[await send_digest(factory, digest_id, settings, catalog)] += 1
    async with session_scope(factory) as session:
        errors = await _problems(session, day)
    await finish_delivery(factory, run_id, "digest", outcomes, errors)


async def _problems(session: AsyncSession, day: dt.date) -> list[str]:
    """The day's digests a person should check, as the delivery record lists them."""
    problems = await session.execute(
        select(Digest.recipient, Digest.state, Digest.error).where(
            Digest.day == day, Digest.state.in_(("failed", "sending"))
        )
    )
    return [
        f"{recipient}: {error}" if state == "failed" else f"{recipient}: {CUT_SHORT}" + (f" ({error})" if error else "")
        for recipient, state, error in problems
    ]


async def record_sent_again(session: AsyncSession, digest_id: int, was: str) -> None:
    """A digest sent again by hand: its run's delivery record counts it sent instead of failed or
    unconfirmed, and lists only what is still to check."""
    digest = await session.get(Digest, digest_id)
    assert digest is not None
    delivery = await session.get(RunDelivery, (digest.run_id, "digest"))
    if delivery is None or delivery.state not in ("partial", "done"):
        return  # not finished (or it broke off): its own job writes it
    counts = Counter(delivery.counts)
    counts["failed" if was == "failed" else "unconfirmed"] -= 1
    counts["sent"] += 1
    errors = await _problems(session, digest.day)
    delivery.counts = {name: max(0, count) for name, count in counts.items()}
    delivery.errors = errors[:KEPT_ERRORS]
    delivery.state = "partial" if errors else "done"
