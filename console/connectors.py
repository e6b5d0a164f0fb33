"""Connectors in the console: the snapshot source's health, and what goes out after a run —
the CSMs' digests (a preview of any CSM's email, what went out by day) and the CRM write-back
(what the CRM refused). Pages for CSM ops, and the same facts as JSON under /api/console."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from msgspec import Struct
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.files import SnapshotFolderError, read_manifest
from console.runs import GUARD, PARTS_DONE, RunView, run_view
from server.db.base import utcnow
from server.db.models import Account, CrmPush, Digest, Run, RunDelivery, Snapshot, User
from server.errors import InvalidInput, NotFound
from server.services.audit import record
from server.services.catalog import load_catalog
from server.services.deliveries import summary
from server.services.digests import (
    NEEDS_A_PERSON,
    DigestContent,
    as_recipient,
    build_digest,
    previous_counts,
    record_sent_again,
    release_digest,
    render,
    send_digest,
)
from server.services.preferences import digest_turned_off
from server.settings import Settings
from server.web.access import CurrentUser, Role
from server.web.portal_helpers import today

CRM_REFUSALS_SHOWN = 20
DIGESTS_TO_CHECK = 50
DIGEST_DAYS_SHOWN = 7


class SnapshotHealth(Struct, kw_only=True):
    folder: str
    readable: bool
    problem: str | None = None
    as_of: dt.date | None = None
    source: str | None = None
    complete: bool | None = None
    files: dict[str, int] = {}
    age_days: int | None = None
    last_run: RunView | None = None


async def snapshot_health(session: AsyncSession, folder: Path) -> SnapshotHealth:
    health = SnapshotHealth(folder=str(folder), readable=False)
    try:
        manifest = read_manifest(folder)
    except SnapshotFolderError as exc:
        health.problem = str(exc)
        return health
    health.readable = True
    health.as_of, health.source, health.complete = manifest.as_of, manifest.source, manifest.complete
    health.files, resolved = _files_of(folder)
    health.age_days = (utcnow().date() - manifest.as_of).days
    row = (
        await session.execute(
            select(Run, Snapshot.folder, PARTS_DONE)
            .join(Snapshot, Snapshot.id == Run.snapshot_id)
            .where(Snapshot.folder == resolved)
            .order_by(Run.id.desc())
            .limit(1)
        )
    ).first()
    if row is not None:
        health.last_run = run_view(row[0], row[1], row[2])
    return health


def _files_of(folder: Path) -> tuple[dict[str, int], str]:
    """The snapshot's files and sizes, and the folder's absolute path (as runs record it)."""
    return {path.name: path.stat().st_size for path in sorted(folder.glob("*.jsonl"))}, str(folder.resolve())


class DigestDay(Struct, kw_only=True):
    day: dt.date
    sent: int = 0
    failed: int = 0
    sending: int = 0  # cut short and not confirmed: left to a person
    pending: int = 0


class DigestToCheck(Struct, kw_only=True):
    """A digest cut short and not confirmed, or refused by the SMTP server: a person may send it again."""

    id: int
    day: dt.date
    recipient: str
    state: str
    attempts: int
    error: str | None
    claimed_at: dt.datetime | None


class CrmRefusal(Struct, kw_only=True):
    account_id: str
    name: str
    crm_id: str | None  # the company the values were for
    error: str
    failures: int
    failed_at: dt.datetime | None


class Deliveries(Struct, kw_only=True):
    smtp_host: str | None
    crm_url: str | None
    last_digest: dict[str, Any]  # the latest run's delivery (services.deliveries.summary)
    last_crm: dict[str, Any]
    digest_days: list[DigestDay]
    digests_to_check: list[DigestToCheck]  # a person decides: send again, or not
    crm_refusals: list[CrmRefusal]
    csms_without_user: list[str]  # CSMs of the data with no active CSM user: they get no digest
    csms_turned_off: list[str]  # CSM users who turned their digest off (Settings)


async def _latest_delivery(session: AsyncSession, kind: str) -> dict[str, Any]:
    delivery = await session.scalar(
        select(RunDelivery).where(RunDelivery.kind == kind).order_by(RunDelivery.run_id.desc()).limit(1)
    )
    return {**summary(delivery), "run_id": delivery.run_id if delivery else None}


async def deliveries(session: AsyncSession, settings: Settings, csms: list[str]) -> Deliveries:
    days: dict[dt.date, DigestDay] = {}
    by_day = select(Digest.day, Digest.state, func.count()).group_by(Digest.day, Digest.state)
    for day, state, count in await session.execute(by_day):
        if state in DigestDay.__struct_fields__:
            setattr(days.setdefault(day, DigestDay(day=day)), state, count)
    refusals = await session.execute(
        select(CrmPush, Account.name, Account.crm_id)
        .join(Account, Account.id == CrmPush.account_id)
        .where(CrmPush.error.is_not(None))
        .order_by(CrmPush.failed_at.desc(), CrmPush.account_id)
        .limit(CRM_REFUSALS_SHOWN)
    )
    to_check = await session.scalars(
        select(Digest).where(NEEDS_A_PERSON).order_by(Digest.day.desc(), Digest.recipient).limit(DIGESTS_TO_CHECK)
    )
    users = set(await session.scalars(select(User.email).where(User.active.is_(True), User.role == Role.CSM.value)))
    return Deliveries(
        smtp_host=settings.smtp_host,
        crm_url=settings.crm_url,
        last_digest=await _latest_delivery(session, "digest"),
        last_crm=await _latest_delivery(session, "crm"),
        digest_days=sorted(days.values(), key=lambda day: day.day, reverse=True)[:DIGEST_DAYS_SHOWN],
        digests_to_check=[msgspec.convert(digest, DigestToCheck, from_attributes=True) for digest in to_check],
        crm_refusals=[
            CrmRefusal(
                account_id=push.account_id,
                name=name,
                crm_id=crm_id,
                error=push.error or "",
                failures=push.failures,
                failed_at=push.failed_at,
            )
            for push, name, crm_id in refusals
        ],
        csms_without_user=[email for email in csms if email not in users],
        csms_turned_off=sorted(await digest_turned_off(session) & users),
    )


async def _csms(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Account.csm).distinct().order_by(Account.csm)))


async def _digest_preview(session: AsyncSession, settings: Settings, csm: str, day: dt.date) -> DigestContent:
    """The digest `csm` gets on `day`, or would get if a CSM user had that email."""
    if not await session.scalar(select(func.count()).select_from(Account).where(Account.csm == csm)):
        raise NotFound(f"no customer has the CSM {csm!r}")
    user = await session.scalar(select(User).where(User.email == csm))
    viewer = as_recipient(user) if user else CurrentUser(id=0, email=csm, name="", role=Role.CSM)
    previous = await previous_counts(session, user.id, day) if user else None
    catalog = await load_catalog(session, settings.policy_dir)
    return await build_digest(session, viewer, day, settings, catalog, previous)


@get("/console/connectors", guards=GUARD)
async def connectors_page(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], csm: FromQuery[str] = ""
) -> Template:
    settings: Settings = request.app.state.settings
    csms = await _csms(db_session)
    chosen = csm if csm in csms else (csms[0] if csms else "")
    status = await deliveries(db_session, settings, csms)
    return Template(
        "console/connectors.html",
        context={
            "health": await snapshot_health(db_session, settings.snapshot_dir),
            "csms": csms,
            "csm": chosen,
            "digest": await _digest_preview(db_session, settings, chosen, today(request)) if chosen else None,
            "has_user": chosen not in status.csms_without_user,
            "turned_off": chosen in status.csms_turned_off,
            "status": status,
            "customers": await db_session.scalar(select(func.count()).select_from(Account)),
            "redis": bool(settings.redis_url),
            "settings": settings,
        },
    )


@get("/console/connectors/digest", guards=GUARD)
async def digest_email(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], csm: FromQuery[str]
) -> Response[str]:
    """The digest email of one CSM, as HTML, exactly as it would be sent now."""
    settings: Settings = request.app.state.settings
    _text, html = render(await _digest_preview(db_session, settings, csm, today(request)))
    return Response(html, media_type="text/html")


@post("/console/connectors/digests/{digest_id:int}/send", guards=GUARD, status_code=303)
async def send_digest_again(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], digest_id: FromPath[int]
) -> Redirect:
    """Send a digest again: one refused, or one cut short that the person has checked did not arrive."""
    settings: Settings = request.app.state.settings
    user: CurrentUser = request.user
    if settings.smtp_host is None:
        raise InvalidInput("no SMTP server is configured (CSM_SMTP_HOST): nothing can be sent")
    before = await release_digest(db_session, digest_id)
    await db_session.commit()
    catalog = await load_catalog(db_session, settings.policy_dir)
    outcome = await send_digest(request.app.state.session_factory, digest_id, settings, catalog)
    if outcome == "sent":
        await record_sent_again(db_session, digest_id, before["state"])
    await record(
        db_session,
        "digest.sent_again",
        actor=user.email,
        object_type="digest",
        object_id=str(digest_id),
        outcome="ok" if outcome == "sent" else "failed",
        before=before,
        after={"outcome": outcome},
    )
    return Redirect(f"/console/connectors?resent={outcome}", status_code=303)


@get("/api/console/connectors", guards=GUARD)
async def connectors_api(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> SnapshotHealth:
    settings: Settings = request.app.state.settings
    return await snapshot_health(db_session, settings.snapshot_dir)


@get("/api/console/deliveries", guards=GUARD)
async def deliveries_api(request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Deliveries:
    """What went out after the runs: the latest digests and CRM write-back, digests by day, CRM refusals."""
    settings: Settings = request.app.state.settings
    return await deliveries(db_session, settings, await _csms(db_session))


@get("/api/console/digest", guards=GUARD)
async def digest_api(
    request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], csm: FromQuery[str]
) -> DigestContent:
    """One CSM's digest as it would be sent now: subject, counters and deltas, the tasks listed."""
    settings: Settings = request.app.state.settings
    return await _digest_preview(db_session, settings, csm, today(request))


ROUTES = [connectors_page, digest_email, send_digest_again, connectors_api, deliveries_api, digest_api]
