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
SMTP_SECURITY = ("starttls", "tls", "none")


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
    # The CSMs' morning digest (no SMTP host: no emails; the console still previews them).
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: str = "starttls"  # starttls | tls | none
    mail_from: str = "CSM Portal <csm-portal@localhost>"
    digest_link_days: int = 7  # how long a digest's deep links work
    # CHI write-back to the CRM, HubSpot CRM v3 shape (no URL: no write-back).
    crm_url: str | None = None
    crm_token: str = ""
    crm_update_path: str = "/crm/v3/objects/companies/batch/update"
    crm_properties: tuple[str, str, str] = ("csm_health_score", "csm_health_band", "csm_health_date")

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
            smtp_host=env.get("CSM_SMTP_HOST") or None,
            smtp_port=int(env.get("CSM_SMTP_PORT", "587")),
            smtp_username=env.get("CSM_SMTP_USERNAME") or None,
            smtp_password=env.get("CSM_SMTP_PASSWORD") or None,
            smtp_security=_one_of("CSM_SMTP_SECURITY", env.get("CSM_SMTP_SECURITY", "starttls"), SMTP_SECURITY),
            mail_from=env.get("CSM_MAIL_FROM", cls.mail_from),
            digest_link_days=_at_least_one("CSM_DIGEST_LINK_DAYS", env.get("CSM_DIGEST_LINK_DAYS", "7")),
            crm_url=env.get("CSM_CRM_URL") or None,
            crm_token=env.get("CSM_CRM_TOKEN", ""),
            crm_update_path=env.get("CSM_CRM_UPDATE_PATH", cls.crm_update_path),
            crm_properties=_three_names(
                "CSM_CRM_PROPERTIES", env.get("CSM_CRM_PROPERTIES", ",".join(cls.crm_properties))
            ),
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


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _three_names(name: str, value: str) -> tuple[str, str, str]:
    """The CRM's property names for the score, the band and the date, comma-separated."""
    names = [part.strip() for part in value.split(",")]
    if len(names) != 3 or not all(names):
        raise ValueError(f"{name} must name three properties (score, band, date), comma-separated, not {value!r}")
    return names[0], names[1], names[2]
