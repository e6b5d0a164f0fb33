"""Configuration from the environment (`CSM_*`), read once by the entry points and passed down."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
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
    secret_key: str = ""
    base_url: str = "http://127.0.0.1:8000"
    secure_cookies: bool = False
    environment: str = "development"
    stale_after: dt.timedelta = dt.timedelta(minutes=15)  # a claimed chunk or an ingestion this quiet is presumed lost
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
            secret_key=env.get("CSM_SECRET_KEY", ""),
            base_url=base_url,
            secure_cookies=base_url.startswith("https://"),
            environment=env.get("CSM_ENV", "development"),
            stale_after=dt.timedelta(seconds=int(env.get("CSM_STALE_SECONDS", "900"))),
            sweep_seconds=int(env.get("CSM_SWEEP_SECONDS", "60")),
        )

    def secret(self) -> str:
        """The signing secret: configured, or (development only) a per-process random one."""
        if self.secret_key:
            return self.secret_key
        if self.environment == "production":
            raise RuntimeError("CSM_SECRET_KEY must be set in production")
        return _DEVELOPMENT_SECRET


_DEVELOPMENT_SECRET = secrets.token_urlsafe(32)
