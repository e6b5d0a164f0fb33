"""What a CSM records on a customer's Activity tab: sentiment and meeting outcomes.

Both are inputs of the next engine run (`ingest.load_portal_entries`): sentiment recorded here is
read after the snapshot's own rows, and a meeting outcome fills a blank snapshot outcome (or
replaces an older one). The portal shows them at once, marked as waiting for the next run.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.db.models import MeetingOutcome, SentimentEntry
from server.db.upsert import upsert
from server.errors import Forbidden, InvalidInput, NotFound
from server.services import audit
from server.services.customer_tabs import records
from server.services.customers import get_account
from server.web.access import Capability, CurrentUser

SENTIMENTS = ("positive", "neutral", "negative")
MAX_NOTE = 1000
MAX_OUTCOME = 2000


def _require_edit(user: CurrentUser) -> None:
    if not user.can(Capability.EDIT_CUSTOMERS):
        raise Forbidden(f"your role ({user.role}) may not record sentiment or meeting outcomes")


def _text(value: str, name: str, limit: int, required: bool) -> str:
    cleaned = "".join(char for char in value.strip() if char.isprintable() or char == "\n")
    if required and not cleaned:
        raise InvalidInput(f"the {name} is empty", field=name)
    if len(cleaned) > limit:
        raise InvalidInput(f"the {name} may be at most {limit} characters long", field=name)
    return cleaned


async def record_sentiment(
    session: AsyncSession, user: CurrentUser, account_id: str, value: str, note: str, today: dt.date
) -> SentimentEntry:
    _require_edit(user)
    account = await get_account(session, user, account_id)
    if value not in SENTIMENTS:
        raise InvalidInput(f"sentiment must be one of {', '.join(SENTIMENTS)}", field="value")
    entry = SentimentEntry(
        account_id=account.id,
        recorded_on=today,
        value=value,
        note=_text(note, "note", MAX_NOTE, required=False),
        recorded_by=user.email,
    )
    session.add(entry)
    await session.flush()
    await audit.record(
        session,
        "customer.sentiment_recorded",
        actor=user.email,
        object_type="account",
        object_id=account.id,
        after={"value": value, "recorded_on": today.isoformat()},
    )
    return entry


async def record_outcome(
    session: AsyncSession, user: CurrentUser, account_id: str, meeting_id: str, outcome: str, today: dt.date
) -> MeetingOutcome:
    _require_edit(user)
    account = await get_account(session, user, account_id)
    text = _text(outcome, "outcome", MAX_OUTCOME, required=True)
    meetings = (await records(session, account.id, ("meetings",)))["meetings"]
    meeting = next((row for row in meetings if str(row.get("id")) == meeting_id), None)
    if meeting is None:
        raise NotFound(f"no meeting {meeting_id!r} for this customer")
    held_on = str(meeting.get("held_on") or "")
    if held_on > today.isoformat():
        raise InvalidInput("this meeting has not been held yet; record its outcome afterwards", field="meeting_id")
    before = await session.get(MeetingOutcome, meeting_id)
    previous = before.outcome if before else meeting.get("outcome")
    row = {
        "meeting_id": meeting_id,
        "account_id": account.id,
        "outcome": text,
        "recorded_by": user.email,
        "recorded_at": utcnow(),
    }
    await upsert(session, MeetingOutcome, [row], ("meeting_id",), ("outcome", "recorded_by", "recorded_at"))
    saved = await session.get(MeetingOutcome, meeting_id, populate_existing=True)
    assert saved is not None
    await audit.record(
        session,
        "customer.meeting_outcome_recorded",
        actor=user.email,
        object_type="meeting",
        object_id=meeting_id,
        before={"outcome": (previous or "")[:300]} if previous else None,
        after={"outcome": text[:300], "account_id": account.id},
    )
    return saved
