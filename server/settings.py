"""Configuration from the environment (`CSM_*`), read once by the entry points and passed down."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/csm.db"


def _time(text: str) -> dt.time:
    return dt.time.fromisoformat(text)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    policy_dir: Path = Path("policies")
    snapshot_dir: Path = Path("var/snapshots/latest")
    run_at: dt.time = dt.time(6, 0)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Berlin"))
    chunk_size: int = 1000
    ingest_parts: int = 1  # a run's reading split by customer into this many jobs (about one per worker)
    secret_key: str = ""
    base_url: str = "http://127.0.0.1:8000"
    secure_cookies: bool = False
    environment: str = "development"
    stale_after: dt.timedelta = dt.timedelta(minutes=15)  # a claimed chunk or part this quiet is presumed lost
    sweep_seconds: int = 60

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        base_url = env.get("CSM_BASE_URL", cls.base_url)
        return cls(
            database_url=env.get("CSM_DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=env.get("CSM_REDIS_URL") or None,
            policy_dir=Path(env.get("CSM_POLICY_DIR", "policies")),
            snapshot_dir=Path(env.get("CSM_SNAPSHOT_DIR", "var/snapshots/latest")),
            run_at=_time(env.get("CSM_RUN_AT", "06:00")),
            timezone=ZoneInfo(env.get("CSM_TIMEZONE", "Europe/Berlin")),
            chunk_size=int(env.get("CSM_CHUNK_SIZE", "1000")),
            ingest_parts=_at_least_one("CSM_INGEST_PARTS", env.get("CSM_INGEST_PARTS", "1")),
            secret_key=env.get("CSM_SECRET_KEY", ""),
            base_url=base_url,
            secure_cookies=base_url.startswith("https://"),
            environment=env.get("CSM_ENV", "development"),
            stale_after=dt.timedelta(seconds=int(env.get("CSM_STALE_SECONDS", "900"))),
            sweep_seconds=int(env.get("CSM_SWEEP_SECONDS", "60")),
        )

    def secret(self) -> str:
        """The signing secret: configured, or (development only) a random one kept in a file."""
        if self.secret_key:
            return self.secret_key
        if self.environment == "production":
            raise RuntimeError("CSM_SECRET_KEY must be set in production")
        return _development_secret()


@cache
def _development_secret() -> str:
    """Development only: a random secret kept in var/dev-secret-key (mode 600), so that a restart
    and the CLI sign with the same key as the server (CSRF cookies, set-password links)."""
    path = Path(os.environ.get("CSM_DEV_SECRET_FILE", "var/dev-secret-key"))
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text(encoding="utf-8").strip()
        if len(text) >= 32:
            return text
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret)
    return secret


def _at_least_one(name: str, value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be at least 1, not {number}")
    return number
