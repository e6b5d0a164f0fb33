"""Two-factor sign-in: TOTP (RFC 6238) with pyotp, and one-time recovery codes.

- Secrets are 160 random bits (`pyotp.random_base32`); codes are 6 digits for 30 s; one step of
  clock drift is allowed either way.
- A code is accepted once: the accepted time step is stored with an atomic compare-and-set
  (`UPDATE ... WHERE totp_last_step IS NULL OR totp_last_step < :step`), so the same code, or an
  older one, is refused afterwards, even by two requests racing each other. The step is found
  by matching the *normalised* code (full-width digits, spaces and dashes are folded first), so
  `１２３４５６` cannot replay `123456`.
- Enrolment stores the step of the confirming code: it cannot be reused to sign in.
- Seeds are sealed at rest (`SeedBox`): AES-256-GCM under a key derived with HKDF from the app's
  secret key, with the user's id as associated data, so the database alone (a backup, a read-only
  leak) yields no codes, and a sealed seed copied onto another user does not open.
- A new app secret key: `reseal_seeds` seals every seed again under it, from the previous key
  (`csm users reseal-2fa`), so nobody's two-factor set-up is lost.
- Ten recovery codes of 50 random bits each, shown once, stored as Argon2id hashes, each
  usable once (again an atomic compare-and-set on `used_at`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import unicodedata
from enum import Enum

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.db.models import RecoveryCode, User
from server.errors import Conflict

ISSUER = "CSM Portal"
VALID_WINDOW = 1  # steps of 30 s either side
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
_RECOVERY_LENGTH = 10
# Recovery codes carry 50 random bits; the OWASP minimum Argon2id profile keeps checking ten of them fast.
RECOVERY_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


class CodeCheck(Enum):
    OK = "ok"
    WRONG = "wrong"
    REPLAYED = "replayed"


class SeedBox:
    """Seals TOTP seeds for the database and opens them again (see the module's notes)."""

    VERSION = "v1"

    def __init__(self, app_secret: str) -> None:
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"csm-portal totp seed v1").derive(
            app_secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, seed: str, user_id: int) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, seed.encode(), _bound_to(user_id))
        return f"{self.VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, user_id: int) -> str | None:
        """The seed, or None when `stored` was not sealed for this user under this key."""
        version, _, body = stored.partition(".")
        if version != self.VERSION:
            return None
        try:
            raw = base64.urlsafe_b64decode(body)
            return self._aead.decrypt(raw[:12], raw[12:], _bound_to(user_id)).decode()
        except (binascii.Error, ValueError, InvalidTag):
            return None


def _bound_to(user_id: int) -> bytes:
    return f"app_user:{user_id}".encode()


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits from `secrets`


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_data_uri(uri: str) -> str:
    """The QR code of `uri` as an SVG data URI, drawn on the server (no script, allowed by the CSP)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, dark="#14213d"))


def normalise_code(text: str, digits: int = 6) -> str | None:
    """The code as plain ASCII digits (full-width digits folded, spaces and dashes dropped), or None."""
    if len(text) > 64:
        return None
    folded = unicodedata.normalize("NFKC", text)
    folded = "".join(char for char in folded if not char.isspace() and char not in "-‐‑–")
    if len(folded) != digits or not all("0" <= char <= "9" for char in folded):
        return None
    return folded


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code is `code` (within the drift window), or None."""
    normal = normalise_code(code)
    if normal is None:
        return None
    try:
        return pyotp.TOTP(secret).verify_and_get_timecode(normal, for_time=int(now), valid_window=VALID_WINDOW)
    except pyotp.OTPVerificationError:
        return None


async def claim_step(session: AsyncSession, user_id: int, step: int) -> bool:
    """Record `step` as the last accepted one, only if it is newer than the last (atomic)."""
    result = await session.execute(
        update(User)
        .where(User.id == user_id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


async def check_code(session: AsyncSession, box: SeedBox, user: User, code: str, now: float) -> CodeCheck:
    """Check a sign-in code of an enrolled user and use it up."""
    seed = box.open(user.totp_secret, user.id) if user.totp_enabled and user.totp_secret else None
    if seed is None:  # not enrolled, or sealed under another secret key (an admin resets it)
        return CodeCheck.WRONG
    step = matching_step(seed, code, now)
    if step is None:
        return CodeCheck.WRONG
    if not await claim_step(session, user.id, step):
        return CodeCheck.REPLAYED
    return CodeCheck.OK


async def enable(session: AsyncSession, box: SeedBox, user: User, secret: str, step: int) -> list[str]:
    """Turn two-factor on with a confirmed secret; the confirming step counts as used. Returns new recovery codes."""
    user.totp_secret = box.seal(secret, user.id)
    user.totp_enabled = True
    user.totp_last_step = step
    user.updated_at = utcnow()
    await session.flush()
    return await new_recovery_codes(session, user)


async def disable(session: AsyncSession, user: User) -> None:
    user.totp_secret = None
    user.totp_enabled = False
    user.totp_last_step = None
    user.updated_at = utcnow()
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await session.flush()


# ── recovery codes ──────────────────────────────────────────────────────────────────────


def _new_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalise_recovery_code(text: str) -> str | None:
    if len(text) > 64:
        return None
    folded = unicodedata.normalize("NFKC", text).lower()
    folded = "".join(char for char in folded if char.isalnum())
    if len(folded) != _RECOVERY_LENGTH or any(char not in _RECOVERY_ALPHABET for char in folded):
        return None
    return folded


async def new_recovery_codes(session: AsyncSession, user: User) -> list[str]:
    """Replace the user's recovery codes with ten new ones; returns them (the only time they are seen)."""
    codes = [_new_code() for _ in range(RECOVERY_CODES)]
    hashes = await asyncio.to_thread(lambda: [RECOVERY_HASHER.hash(code.replace("-", "")) for code in codes])
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    session.add_all(RecoveryCode(user_id=user.id, code_hash=code_hash) for code_hash in hashes)
    await session.flush()
    return codes


def _matches(code_hash: str, code: str) -> bool:
    try:
        return RECOVERY_HASHER.verify(code_hash, code)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def use_recovery_code(session: AsyncSession, user: User, text: str) -> bool:
    """Use up one of the user's recovery codes, if `text` is one that is still unused."""
    code = normalise_recovery_code(text)
    if code is None or not user.totp_enabled:
        return False
    rows = (
        await session.execute(
            select(RecoveryCode.id, RecoveryCode.code_hash).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        )
    ).all()
    for code_id, code_hash in rows:
        if await asyncio.to_thread(_matches, code_hash, code):
            result = await session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == code_id, RecoveryCode.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]
    return False


async def remaining_recovery_codes(session: AsyncSession, user_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return int(count or 0)


async def remaining_recovery_codes_by_user(session: AsyncSession) -> dict[int, int]:
    """Unused recovery codes per user (users with none are left out)."""
    counts = await session.execute(
        select(RecoveryCode.user_id, func.count()).where(RecoveryCode.used_at.is_(None)).group_by(RecoveryCode.user_id)
    )
    return dict(counts.all())


async def reseal_seeds(session: AsyncSession, previous: SeedBox, current: SeedBox) -> tuple[int, int]:
    """Seal every TOTP seed under `current`, opening it with `previous` (after a key rotation).

    Returns (resealed, already under `current`). Seeds that open under neither key are a
    Conflict naming their users, and nothing is changed: a wrong previous key loses nothing.
    """
    users = list(await session.scalars(select(User).where(User.totp_secret.is_not(None)).order_by(User.id)))
    resealed: list[tuple[User, str]] = []
    already = 0
    unreadable = []
    for user in users:
        assert user.totp_secret is not None
        if current.open(user.totp_secret, user.id) is not None:
            already += 1
        elif (seed := previous.open(user.totp_secret, user.id)) is not None:
            resealed.append((user, current.seal(seed, user.id)))
        else:
            unreadable.append(user.email)
    if unreadable:
        raise Conflict(
            f"{len(unreadable)} two-factor seeds open under neither key ({', '.join(unreadable[:10])}); "
            "nothing was changed. Give the key they were sealed with, or reset their two-factor."
        )
    for user, sealed in resealed:
        user.totp_secret = sealed
    return len(resealed), already
