"""The database tables.

Two owners write task data and never the same columns: the engine writes `task` (what fired,
why, since when), CSMs write `task_state` (state, snooze, comment, assignee) through the
portal. A run therefore never overwrites a CSM's edit, even one made while it runs. Nothing is
deleted: a task that stops firing becomes inactive with `resolved_at`; `task_event` keeps the
history of both owners.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow

ID = String(200)
EMAIL = String(320)


# ── snapshots, policies, runs ───────────────────────────────────────────────────────────


class Snapshot(Base):
    """A snapshot folder as it was read by a run (DATA.md)."""

    __tablename__ = "snapshot"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    folder: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(200))
    as_of: Mapped[dt.date] = mapped_column(Date)
    manifest: Mapped[dict[str, Any]]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PolicyVersion(Base):
    """An immutable policy set: the text of its files, identified by its content hash."""

    __tablename__ = "policy_version"
    id: Mapped[int] = mapped_column(primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    files: Mapped[dict[str, Any]]  # file name -> YAML text
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(EMAIL)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PolicyPublication(Base):
    """Each publish or rollback; the latest row names the published version."""

    __tablename__ = "policy_publication"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("policy_version.id"))
    action: Mapped[str] = mapped_column(String(20))  # install | publish | rollback
    comment: Mapped[str] = mapped_column(Text, default="")
    published_by: Mapped[str | None] = mapped_column(EMAIL)
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PolicyDraft(Base):
    """A policy set being edited in the console (not used by runs until published)."""

    __tablename__ = "policy_draft"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    files: Mapped[dict[str, Any]]
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_version.id"))
    updated_by: Mapped[str | None] = mapped_column(EMAIL)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Run(Base):
    """One engine run: pinned to one snapshot and one policy version, with counts and timings."""

    __tablename__ = "run"
    id: Mapped[int] = mapped_column(primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshot.id"))
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_version.id"))
    policy_hash: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    trigger: Mapped[str] = mapped_column(String(20), default="manual")  # schedule | manual | cli | console
    mode: Mapped[str] = mapped_column(String(20), default="in-process")  # in-process | workers
    chunk_size: Mapped[int] = mapped_column(Integer, default=1000)
    parts_total: Mapped[int] = mapped_column(Integer, default=1)  # ingestion split into this many parts
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # phase -> seconds
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    bad_rows: Mapped[list[Any]] = mapped_column(default=list)  # the first ones, located
    bad_by_reason: Mapped[dict[str, Any]] = mapped_column(default=dict)
    errors: Mapped[list[Any]] = mapped_column(default=list)  # evaluation errors (first ones)
    error: Mapped[str | None] = mapped_column(Text)  # why the run failed
    created_by: Mapped[str | None] = mapped_column(EMAIL)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class RunPart(Base):
    """A share of a run's customers, read and staged by one ingestion job; its state lives here."""

    __tablename__ = "run_part"
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), primary_key=True)
    part_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | running | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    bad_rows: Mapped[list[Any]] = mapped_column(default=list)  # its customers' first bad rows, located
    bad_by_reason: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]  # the part is being read; a stale heartbeat means its worker died
    finished_at: Mapped[dt.datetime | None]


class RunChunk(Base):
    """A slice of a run's customers, processed by one job; its state lives here, not in Redis."""

    __tablename__ = "run_chunk"
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), primary_key=True)
    chunk_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_account: Mapped[str] = mapped_column(ID)
    last_account: Mapped[str] = mapped_column(ID)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | running | done
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class RunFact(Base):
    """Staging: a customer's derived facts for a run, between ingestion and the chunk jobs."""

    __tablename__ = "run_fact"
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ID, primary_key=True)
    complete: Mapped[bool] = mapped_column(Boolean, default=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


# ── customers and their data ────────────────────────────────────────────────────────────


class Account(Base):
    """A customer: its latest snapshot row, latest health, and the facts the portal shows."""

    __tablename__ = "account"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    tier: Mapped[str] = mapped_column(String(20), index=True)
    csm: Mapped[str] = mapped_column(EMAIL, index=True)
    acv: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(3))
    crm_id: Mapped[str | None] = mapped_column(String(200))
    success_program: Mapped[str | None] = mapped_column(String(200))
    segment: Mapped[str | None] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(200))
    source_tags: Mapped[list[Any]] = mapped_column(default=list)
    raw: Mapped[dict[str, Any]] = mapped_column(default=dict)
    products: Mapped[list[Any]] = mapped_column(default=list)  # contracted product codes
    renewal_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    has_active_order: Mapped[bool] = mapped_column(Boolean, default=False)
    chi: Mapped[int | None] = mapped_column(Integer, index=True)
    band: Mapped[str | None] = mapped_column(String(30), index=True)
    sections: Mapped[dict[str, Any]] = mapped_column(default=dict)
    points_lost: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    coverage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    policy_segments: Mapped[list[Any]] = mapped_column(default=list)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    policy_hash: Mapped[str | None] = mapped_column(String(64))
    scored_run_id: Mapped[int | None] = mapped_column(Integer)
    last_seen_run_id: Mapped[int | None] = mapped_column(Integer)
    last_seen_as_of: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccountRecord(Base):
    """A customer's rows of one small entity (orders, invoices, tickets...) as of the latest snapshot.

    `rows` is the JSON array of the rows exactly as the snapshot had them, unknown fields included.
    """

    __tablename__ = "account_record"
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(30), primary_key=True)
    rows: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    updated_run_id: Mapped[int | None] = mapped_column(Integer)


class DailySeries(Base):
    """A customer's daily values: `activity`, or `usage:<product>`; kept across snapshots.

    `data` is JSON: {"start": first day, field: [value per day from start, null where none]}.
    One row per series, not per day, keeps 15 million usage rows a run to 160 thousand writes.
    """

    __tablename__ = "daily_series"
    account_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    first_day: Mapped[dt.date] = mapped_column(Date)
    last_day: Mapped[dt.date] = mapped_column(Date)
    data: Mapped[str] = mapped_column(Text)


class ChiPoint(Base):
    """One point of CHI history per customer per run."""

    __tablename__ = "chi_point"
    account_id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), primary_key=True)
    as_of: Mapped[dt.date] = mapped_column(Date)
    chi: Mapped[int] = mapped_column(Integer)
    band: Mapped[str] = mapped_column(String(30))
    policy_hash: Mapped[str] = mapped_column(String(64))
    sections: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_chi_point_account_as_of", "account_id", "as_of"),)


class SentimentEntry(Base):
    """CSM sentiment recorded in the portal; the next run reads it as a sentiment row."""

    __tablename__ = "sentiment_entry"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    recorded_on: Mapped[dt.date] = mapped_column(Date)
    value: Mapped[str] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(Text, default="")
    recorded_by: Mapped[str] = mapped_column(EMAIL)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MeetingOutcome(Base):
    """A meeting outcome recorded in the portal; the next run reads it as the meeting's outcome."""

    __tablename__ = "meeting_outcome"
    meeting_id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    outcome: Mapped[str] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(EMAIL)
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# ── tasks ───────────────────────────────────────────────────────────────────────────────


class Task(Base):
    """What the engine says about a task. Only runs write these columns."""

    __tablename__ = "task"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # engine.runtime.task_id(rule, account, key)
    rule: Mapped[str] = mapped_column(String(100), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    key: Mapped[str] = mapped_column(String(300), default="")
    category: Mapped[str] = mapped_column(String(60))
    severity: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    due_on: Mapped[dt.date] = mapped_column(Date)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    condition: Mapped[str] = mapped_column(Text, default="")
    severity_case: Mapped[str | None] = mapped_column(Text)
    policy_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]
    reopened_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    opened_run_id: Mapped[int | None] = mapped_column(Integer)
    updated_run_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_task_account_active", "account_id", "active"),
        Index("ix_task_active_severity", "active", "severity"),
    )


class TaskState(Base):
    """What the CSM says about a task. Only people (and the snooze wake-up) write these columns."""

    __tablename__ = "task_state"
    task_id: Mapped[str] = mapped_column(ForeignKey("task.id"), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="not_started")
    snoozed_until: Mapped[dt.date | None] = mapped_column(Date)
    state_before_snooze: Mapped[str | None] = mapped_column(String(20))
    comment: Mapped[str] = mapped_column(Text, default="")
    assignee: Mapped[str | None] = mapped_column(EMAIL)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[str | None] = mapped_column(EMAIL)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TaskEvent(Base):
    """The history of a task: engine events (opened, updated, resolved, reopened) and CSM changes."""

    __tablename__ = "task_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("task.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(EMAIL)  # a user's email, or "engine" / "system"
    kind: Mapped[str] = mapped_column(String(20))
    from_value: Mapped[str | None] = mapped_column(Text)
    to_value: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(Integer)


# ── portal: tags, saved filters, preferences ────────────────────────────────────────────


class Tag(Base):
    __tablename__ = "tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    colour: Mapped[str] = mapped_column(String(7), default="#5b6b7f")
    created_by: Mapped[str | None] = mapped_column(EMAIL)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccountTag(Base):
    __tablename__ = "account_tag"
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True, index=True)
    added_by: Mapped[str | None] = mapped_column(EMAIL)
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SavedFilter(Base):
    __tablename__ = "saved_filter"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    page: Mapped[str] = mapped_column(String(30), default="overview")
    query: Mapped[str] = mapped_column(Text)  # the URL query string
    owner: Mapped[str] = mapped_column(EMAIL, index=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("owner", "name"),)


class UserPreference(Base):
    __tablename__ = "user_preference"
    user_email: Mapped[str] = mapped_column(EMAIL, primary_key=True)
    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)


# ── users, sessions, audit ──────────────────────────────────────────────────────────────


class User(Base):
    __tablename__ = "app_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(EMAIL, unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))  # admin | ops | manager | csm | viewer
    password_hash: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    # Bumped on logout-everywhere, password change, role change and deactivation:
    # every session that carries an older epoch is refused.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    password_changed_at: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RecoveryCode(Base):
    __tablename__ = "recovery_code"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    code_hash: Mapped[str] = mapped_column(Text)
    used_at: Mapped[dt.datetime | None]


class SessionRecord(Base):
    """Server-side sessions (the portal's session store when no Redis is configured)."""

    __tablename__ = "session_record"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class AuditEvent(Base):
    """Append-only: security and business events with who, when, what, before and after."""

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(EMAIL, index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str | None] = mapped_column(String(60))
    object_id: Mapped[str | None] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(20), default="ok")
    ip: Mapped[str | None] = mapped_column(String(100))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    before: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Setting(Base):
    __tablename__ = "setting"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)


# ── after a run: the CSMs' digests and the CRM write-back ────────────────────────────────


class RunDelivery(Base):
    """What went out after a run (the CSMs' digests, the CRM write-back): state, counts, errors.

    Never part of the run's own outcome: a failed delivery is reported here, and the run stands."""

    __tablename__ = "run_delivery"
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)  # digest | crm
    state: Mapped[str] = mapped_column(String(20), default="running")  # running | done | partial | failed | off
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    errors: Mapped[list[Any]] = mapped_column(default=list)  # the first ones
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class Digest(Base):
    """One morning email per CSM per day: the outbox row that makes a retried job send it once."""

    __tablename__ = "digest"
    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    recipient: Mapped[str] = mapped_column(EMAIL)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), index=True)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the four counters, as sent
    message_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]

    __table_args__ = (UniqueConstraint("day", "user_id"),)


class CrmPush(Base):
    """A customer's health as the CRM last accepted it, and the last failure to push a newer one."""

    __tablename__ = "crm_push"
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    crm_id: Mapped[str | None] = mapped_column(String(200))  # the company the values went to
    chi: Mapped[int | None] = mapped_column(Integer)
    band: Mapped[str | None] = mapped_column(String(30))
    as_of: Mapped[dt.date | None] = mapped_column(Date)
    pushed_at: Mapped[dt.datetime | None]
    run_id: Mapped[int | None] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row, since the last accepted push
    error: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[dt.datetime | None]


class SecurityEmail(Base):
    """An email sent for a security event of the audit log (a reused code, a reset two-factor, a
    set-password link asked for...): the event is the outbox, this row makes it go out once."""

    __tablename__ = "security_email"
    audit_event_id: Mapped[int] = mapped_column(ForeignKey("audit_event.id"), primary_key=True)
    recipient: Mapped[str] = mapped_column(EMAIL)
    action: Mapped[str] = mapped_column(String(60))
    state: Mapped[str] = mapped_column(String(20), default="sending")  # sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    sent_at: Mapped[dt.datetime | None]


class KnownDevice(Base):
    """A browser a user signed in from (by the hash of its `csm_device` cookie): a sign-in from
    any other is a new device, which the user is emailed about."""

    __tablename__ = "known_device"
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    device_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
