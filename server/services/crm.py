"""CHI write-back to the CRM: each customer's score, band and date as company properties.

The shape is HubSpot's CRM v3 batch update (`POST {CSM_CRM_URL}{CSM_CRM_UPDATE_PATH}`, at most
100 companies a call, addressed by the customer's `crm_id`). Only what changed goes out: a
customer is sent when its company, score or band differ from what the CRM last accepted
(`crm_push`), so a retried job, or the next run, sends only what is not recorded yet. The one
window for sending a value twice is a process dying between the CRM's answer and the commit
that records it (or an answer lost on the way back, after which the batch is sent again); the
CRM then receives the same values again, which changes nothing there.

A delivery never fails its run: whatever goes wrong is counted and listed on `run_delivery`,
and the customers not accepted go out at the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from server.db.base import utcnow
from server.db.models import Account, CrmPush, Run
from server.db.session import session_scope
from server.db.upsert import upsert
from server.services.deliveries import Factory, finish_delivery, start_delivery
from server.settings import Settings

log = logging.getLogger("csm.crm")

KIND = "crm"
BATCH_SIZE = 100  # HubSpot's limit of inputs per batch call
ATTEMPTS = 5  # per batch, for answers worth retrying (429 secondly, 5xx, no answer)
TIMEOUT = httpx.Timeout(30.0)
MAX_WAIT = 120.0  # seconds; a longer Retry-After is cut to this (the attempts are limited anyway)
MESSAGE_LENGTH = 300
MAX_ANSWER = 1_000_000  # bytes of an answer read at most (HubSpot's to 100 companies: about 30 KB)
COUNT_NAMES = ("candidates", "pushed", "failed", "waiting", "unchanged", "no_crm_id", "requests", "rate_limited")

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class Candidate:
    account_id: str
    crm_id: str
    chi: int
    band: str | None
    as_of: dt.date


@dataclass
class BatchOutcome:
    accepted: list[Candidate] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # account id -> why
    stop: str | None = None  # why the push ends after this batch: the rest waits for the next run
    unanswered: bool = False  # the batch itself waits too (nothing to record for it)


async def push_health(
    factory: Factory,
    run_id: int,
    settings: Settings,
    client: httpx.AsyncClient | None = None,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, int]:
    """Push the customers' changed health to the CRM and record the run's `crm` delivery.

    Never raises for what the CRM or the network do; returns the counts stored on the delivery
    ({} when the write-back is off)."""
    await start_delivery(factory, run_id, KIND)
    if settings.crm_url is None:
        await finish_delivery(factory, run_id, KIND, {}, [], state="off")
        return {}
    push = _Push(factory, run_id, settings, sleep)
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as own_client:
                await push.run(own_client)
        else:
            await push.run(client)
    except Exception as exc:  # a delivery never fails its run; the customers go out next time
        message = push.clean(f"the CRM write-back stopped: {type(exc).__name__}: {exc}")
        # The cleaned message, not the traceback: an exception's text may quote the request's token.
        log.error("CRM write-back of run %s: %s", run_id, message)
        push.errors.append(message)
        push.stopped_by_error = True
    push.counts["waiting"] = push.counts["candidates"] - push.counts["pushed"] - push.counts["failed"]
    counts = {name: push.counts[name] for name in COUNT_NAMES}
    await finish_delivery(factory, run_id, KIND, counts, push.errors, state=push.state())
    log.info("CRM write-back of run %s: %s", run_id, counts)
    return counts


class _Push:
    """One write-back: its counts and error lines, the batches it sends and records."""

    def __init__(self, factory: Factory, run_id: int, settings: Settings, sleep: Sleep) -> None:
        assert settings.crm_url is not None
        self.factory = factory
        self.run_id = run_id
        self.settings = settings
        self.url = settings.crm_url.rstrip("/") + settings.crm_update_path
        self.sleep = sleep
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.failures: dict[str, int] = {}  # account id -> failed pushes in a row before this one
        self.stopped_by_error = False

    def state(self) -> str:
        if self.stopped_by_error or (self.counts["failed"] and not self.counts["pushed"]):
            return "failed"
        return "partial" if self.errors else "done"

    async def run(self, client: httpx.AsyncClient) -> None:
        candidates = await self.select()
        for start in range(0, len(candidates), BATCH_SIZE):
            batch = candidates[start : start + BATCH_SIZE]
            outcome = await self.send(client, batch)
            await self.record(outcome.accepted, outcome.failed)
            if outcome.stop is not None:
                waiting = len(candidates) - start - (0 if outcome.unanswered else len(batch))
                self.errors.append(f"{outcome.stop}; {waiting} customers wait for the next run")
                return

    async def select(self) -> list[Candidate]:
        """The scored customers whose CRM values changed, by account id.

        A company claimed by several customers is refused here (recorded as their failure): the CRM
        would refuse the whole batch, and which customer is right is for a person to say."""
        async with session_scope(self.factory) as session:
            run = await session.get(Run, self.run_id)
            assert run is not None, f"no run {self.run_id}"
            rows = (
                await session.execute(
                    select(
                        Account.id,
                        Account.crm_id,
                        Account.chi,
                        Account.band,
                        Account.last_seen_as_of,
                        CrmPush.crm_id,
                        CrmPush.chi,
                        CrmPush.band,
                        CrmPush.failures,
                    )
                    .outerjoin(CrmPush, CrmPush.account_id == Account.id)
                    .order_by(Account.id)
                )
            ).all()
        changed: list[Candidate] = []
        for account_id, crm_id, chi, band, seen_on, pushed_crm_id, pushed_chi, pushed_band, failures in rows:
            if chi is None:  # never scored: nothing to say to the CRM
                continue
            if not crm_id:
                self.counts["no_crm_id"] += 1
            elif (crm_id, chi, band) == (pushed_crm_id, pushed_chi, pushed_band):
                self.counts["unchanged"] += 1
            else:
                # The score's date: the snapshot that last had the customer (this run's, for its customers).
                changed.append(Candidate(account_id, crm_id, chi, band, seen_on or run.as_of))
                self.failures[account_id] = failures or 0
        self.counts["candidates"] = len(changed)
        claimants: dict[str, list[str]] = {}
        for item in changed:
            claimants.setdefault(item.crm_id, []).append(item.account_id)
        shared = [item for item in changed if len(claimants[item.crm_id]) > 1]
        if shared:
            why = {
                item.account_id: f"company {item.crm_id} is the CRM company of several customers "
                f"({', '.join(claimants[item.crm_id])}); none of them is sent"
                for item in shared
            }
            self.fail(shared, why)
            await self.record([], why)
        return [item for item in changed if len(claimants[item.crm_id]) == 1]

    async def send(self, client: httpx.AsyncClient, batch: Sequence[Candidate]) -> BatchOutcome:
        """One batch call, retried on a secondly 429, a 5xx or no answer (Retry-After, else back-off)."""
        body = {"inputs": [self.input(item) for item in batch]}
        headers = {"Authorization": f"Bearer {self.settings.crm_token}"}  # the token goes nowhere else
        problem = ""
        for attempt in range(1, ATTEMPTS + 1):
            self.counts["requests"] += 1
            try:
                response = await post(client, self.url, body, headers)
            except httpx.TransportError as exc:
                problem, wait = f"the CRM did not answer ({type(exc).__name__})", backoff(attempt)
            except AnswerTooLarge as exc:  # not read: whether the CRM applied the batch is unknown
                return self.batch_failed(batch, str(exc), None)
            else:
                answer = json_object(response)
                status = response.status_code
                if 200 <= status < 300:
                    return self.outcome(batch, answer)
                if status == 429 and answer.get("policyName") == "DAILY":  # resets at the CRM's midnight
                    return BatchOutcome(stop="the CRM's daily API limit is reached", unanswered=True)
                if status == 429:
                    self.counts["rate_limited"] += 1
                    problem, wait = described(response, answer), retry_after(response) or backoff(attempt)
                elif status >= 500:
                    problem, wait = described(response, answer), backoff(attempt)
                else:  # 4xx (a bad property, a bad token) and redirects: the same call would fail the same
                    # A refused token refuses every batch alike.
                    stop = "the CRM refused the token" if status in (401, 403) else None
                    return self.batch_failed(batch, described(response, answer), stop)
            if attempt < ATTEMPTS:
                await self.sleep(wait)
        return self.batch_failed(batch, f"{problem} (after {ATTEMPTS} attempts)", "the CRM is unavailable")

    def input(self, item: Candidate) -> dict[str, Any]:
        score, band, date = self.settings.crm_properties
        return {
            "id": item.crm_id,
            "properties": {score: str(item.chi), band: item.band or "", date: item.as_of.isoformat()},
            "objectWriteTraceId": f"run-{self.run_id}:{item.account_id}",
        }

    def outcome(self, batch: Sequence[Candidate], answer: dict[str, Any]) -> BatchOutcome:
        """200 or 207: an input is accepted iff its company is among the results; the others failed,
        with the message of the error naming their company."""
        done = {str(result.get("id")) for result in answer.get("results") or [] if isinstance(result, dict)}
        reasons: dict[str, str] = {}
        for error in answer.get("errors") or []:
            if isinstance(error, dict):
                ids = (error.get("context") or {}).get("ids") or []
                reason = f"{error.get('category') or 'ERROR'}: {error.get('message') or 'no message'}"
                reasons.update(dict.fromkeys(map(str, ids), reason))
        outcome = BatchOutcome(accepted=[item for item in batch if item.crm_id in done])
        missing = [item for item in batch if item.crm_id not in done]
        outcome.failed = {
            item.account_id: reasons.get(item.crm_id, "the CRM did not confirm this update") for item in missing
        }
        self.counts["pushed"] += len(outcome.accepted)
        self.fail(missing, outcome.failed)
        return outcome

    def fail(self, items: Sequence[Candidate], why: dict[str, str]) -> None:
        """Customers that failed one by one: counted, and a line each."""
        self.counts["failed"] += len(items)
        for item in items:
            why[item.account_id] = self.clean(why[item.account_id])
            self.errors.append(f"account {item.account_id} (company {item.crm_id}): {why[item.account_id]}")

    def batch_failed(self, batch: Sequence[Candidate], problem: str, stop: str | None) -> BatchOutcome:
        """A whole batch refused: counted, and one line for it."""
        message = self.clean(problem)
        self.counts["failed"] += len(batch)
        self.errors.append(
            f"batch of {len(batch)} customers ({batch[0].account_id} … {batch[-1].account_id}): {message}"
        )
        return BatchOutcome(failed={item.account_id: message for item in batch}, stop=stop)

    async def record(self, accepted: Sequence[Candidate], failed: dict[str, str]) -> None:
        """What the CRM accepted and what failed, in one transaction."""
        now = utcnow()
        async with session_scope(self.factory) as session:
            await upsert(
                session,
                CrmPush,
                [
                    {
                        "account_id": item.account_id,
                        "crm_id": item.crm_id,
                        "chi": item.chi,
                        "band": item.band,
                        "as_of": item.as_of,
                        "pushed_at": now,
                        "run_id": self.run_id,
                        "failures": 0,
                        "error": None,
                    }
                    for item in accepted
                ],
                ("account_id",),
                ("crm_id", "chi", "band", "as_of", "pushed_at", "run_id", "failures", "error"),
            )
            # A failure keeps the values the CRM last accepted: they are still what it holds.
            await upsert(
                session,
                CrmPush,
                [
                    {
                        "account_id": account_id,
                        "failures": self.failures[account_id] + 1,
                        "error": error,
                        "failed_at": now,
                    }
                    for account_id, error in failed.items()
                ],
                ("account_id",),
                ("failures", "error", "failed_at"),
            )

    def clean(self, text: str) -> str:
        return scrubbed(text, self.settings.crm_token)


def scrubbed(text: str, token: str | None) -> str:
    """A message fit to store and show: one line, short, and never the token (a CRM may echo it)."""
    if token:
        text = text.replace(token, "[token]")
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LENGTH else text[: MESSAGE_LENGTH - 1] + "…"


class AnswerTooLarge(Exception):
    """The CRM's answer was longer than MAX_ANSWER bytes (read no further)."""


@dataclass(frozen=True)
class Answer:
    """An answer of the CRM, read whole (it is never longer than MAX_ANSWER bytes)."""

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    body: bytes


async def post(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
    """POST and read the answer, refusing one over MAX_ANSWER bytes (a CRM's batch answer is tens
    of kilobytes; whatever is on the other end may not fill the worker's memory). Timeout and
    redirects per request, so that a client given by the caller is held to them too."""
    request = client.stream("POST", url, json=body, headers=headers, timeout=TIMEOUT, follow_redirects=False)
    async with request as response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER:
                raise AnswerTooLarge(f"the CRM's answer (HTTP {response.status_code}) is over {MAX_ANSWER:,} bytes")
            chunks.append(chunk)
        return Answer(response.status_code, response.reason_phrase, response.headers, b"".join(chunks))


def described(response: Answer, answer: dict[str, Any]) -> str:
    """An error answer in one line: status, HubSpot's category or error type, its message."""
    kind = answer.get("category") or answer.get("errorType") or response.reason_phrase
    message = answer.get("message") or response.body.decode("utf-8", "replace") or "no message"
    return f"HTTP {response.status_code} {kind}: {message}"


def json_object(response: Answer) -> dict[str, Any]:
    """The answer's JSON object, or {} (a proxy's HTML error page, an empty body)."""
    try:
        answer = json.loads(response.body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def retry_after(response: Answer) -> float | None:
    """The seconds a 429 asks to wait (HubSpot sends seconds), cut to MAX_WAIT; None when not said."""
    try:
        return min(max(float(response.headers["Retry-After"]), 0.0), MAX_WAIT)
    except (KeyError, ValueError):
        return None


def backoff(attempt: int) -> float:
    """Exponential back-off with jitter (so that several workers do not retry in step)."""
    return min(MAX_WAIT, 2.0**attempt) * (0.5 + random.random())  # noqa: S311 (jitter, not cryptography)


# ── setting up the CRM: the three company properties the write-back fills ────────────────

PROPERTIES_PATH = "/crm/v3/properties/companies"


def property_definitions(settings: Settings) -> list[dict[str, str]]:
    """HubSpot's definitions of the score, band and date properties, with the configured names."""
    score, band, date = settings.crm_properties
    group = "companyinformation"  # HubSpot's default group of company properties
    return [
        {
            "name": score,
            "label": "CSM health score",
            "type": "number",
            "fieldType": "number",
            "groupName": group,
            "description": "Customer Health Index (0-100) from CSM Portal",
        },
        {
            "name": band,
            "label": "CSM health band",
            "type": "string",
            "fieldType": "text",
            "groupName": group,
            "description": "Health band from CSM Portal",
        },
        {
            "name": date,
            "label": "CSM health date",
            "type": "date",
            "fieldType": "date",
            "groupName": group,
            "description": "Date of the snapshot the health was computed from",
        },
    ]


class CrmSetupError(Exception):
    """The CRM refused to create a property (the message says why, without the token)."""


async def create_properties(settings: Settings, client: httpx.AsyncClient | None = None) -> list[tuple[str, str]]:
    """Create the company properties the write-back fills, once: [(name, "created" or "already
    there")]. Raises CrmSetupError on any other answer (a missing scope: 403) or none."""
    assert settings.crm_url is not None, "CSM_CRM_URL is not set"
    url = settings.crm_url.rstrip("/") + PROPERTIES_PATH
    headers = {"Authorization": f"Bearer {settings.crm_token}"}
    outcomes: list[tuple[str, str]] = []
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False))
        for definition in property_definitions(settings):
            try:
                response = await post(client, url, definition, headers)
            except (httpx.HTTPError, AnswerTooLarge) as exc:
                raise CrmSetupError(scrubbed(f"creating {definition['name']}: {exc}", settings.crm_token)) from exc
            if response.status_code in (200, 201):
                outcomes.append((definition["name"], "created"))
            elif response.status_code == 409:  # HubSpot: OBJECT_ALREADY_EXISTS
                outcomes.append((definition["name"], "already there"))
            else:
                problem = described(response, json_object(response))
                raise CrmSetupError(scrubbed(f"creating {definition['name']}: {problem}", settings.crm_token))
    return outcomes
