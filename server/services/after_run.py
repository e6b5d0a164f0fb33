"""After a run succeeded, in one process (`csm run`, the console's run in embedded mode):
the CSMs' digests, then the CRM write-back. On workers, each is a job of its own
(server.worker). Neither can undo the run: what they fail to send is recorded on `run_delivery`."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Run, RunDelivery
from server.db.session import session_scope
from server.services.crm import push_health
from server.services.deliveries import deliveries_of
from server.services.digests import send_digests
from server.settings import Settings

log = logging.getLogger("csm.deliveries")


async def deliver(factory: async_sessionmaker[AsyncSession], run_id: int, settings: Settings) -> dict[str, RunDelivery]:
    """The run's digests, then its write-back; returns what each recorded, by kind."""
    try:
        await send_digests(factory, run_id, settings)
    except Exception:  # recorded as failed on run_delivery; the write-back still goes out
        log.exception("the digests of run %s failed", run_id)
    await push_health(factory, run_id, settings)
    async with session_scope(factory) as session:
        return (await deliveries_of(session, [run_id])).get(run_id, {})


async def succeeded_run(session: AsyncSession, run_id: int | None = None) -> int | None:
    """The run `run_id` if it succeeded, or (None) the latest run that did."""
    chosen = select(Run.id).where(Run.state == "succeeded")
    if run_id is not None:
        chosen = chosen.where(Run.id == run_id)
    return await session.scalar(chosen.order_by(Run.id.desc()).limit(1))
