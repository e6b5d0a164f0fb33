"""What goes out after a run: its record (`run_delivery`), one per run and kind.

A delivery (the CSMs' digests, the CRM write-back) runs after its run succeeded, as worker jobs
or in the same process as an in-process run. It never changes the run's outcome: what failed is
counted and listed here, and the console shows it beside the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.base import utcnow
from server.db.models import RunDelivery
from server.db.session import session_scope
from server.db.upsert import upsert

KEPT_ERRORS = 50
DELIVERY_KINDS = ("digest", "crm")

Factory = async_sessionmaker[AsyncSession]


async def start_delivery(factory: Factory, run_id: int, kind: str) -> None:
    """Record that a delivery of this run began (again, if a job is retried)."""
    async with session_scope(factory) as session:
        await upsert(
            session,
            RunDelivery,
            [{"run_id": run_id, "kind": kind, "state": "running", "counts": {}, "errors": [], "started_at": utcnow()}],
            ("run_id", "kind"),
            ("state", "started_at"),
        )


async def finish_delivery(
    factory: Factory, run_id: int, kind: str, counts: Counter[str] | dict[str, int], errors: list[str], state: str = ""
) -> None:
    """Close the delivery's record: `done`, `partial` when some items failed, or the state given."""
    outcome = state or ("partial" if errors else "done")
    async with session_scope(factory) as session:
        await session.execute(
            update(RunDelivery)
            .where(RunDelivery.run_id == run_id, RunDelivery.kind == kind)
            .values(state=outcome, counts=dict(counts), errors=errors[:KEPT_ERRORS], finished_at=utcnow())
        )


async def deliveries_of(session: AsyncSession, run_ids: list[int]) -> dict[int, dict[str, RunDelivery]]:
    """The deliveries of these runs, by run and kind."""
    found: dict[int, dict[str, RunDelivery]] = {}
    if not run_ids:
        return found
    for delivery in await session.scalars(select(RunDelivery).where(RunDelivery.run_id.in_(run_ids))):
        found.setdefault(delivery.run_id, {})[delivery.kind] = delivery
    return found


def summary(delivery: RunDelivery | None) -> dict[str, Any]:
    """A delivery as the API shows it (None: not started)."""
    if delivery is None:
        return {"state": "not started"}
    return {
        "state": delivery.state,
        "counts": delivery.counts,
        "errors": delivery.errors,
        "started_at": delivery.started_at.isoformat(),
        "finished_at": delivery.finished_at.isoformat() if delivery.finished_at else None,
    }
