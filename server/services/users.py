"""Users: creation and invitation with a password policy, roles, deactivation, ending sessions.

Every change is recorded in the audit log in the same transaction as the change itself.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.base import utcnow
from server.db.models import User
from server.errors import Conflict, Forbidden, InvalidInput, NotFound
from server.services import twofactor
from server.services.audit import Who, record_as
from server.settings import Settings
from server.web.access import Role
from server.web.auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password, verify_password

COMMON_PASSWORDS_FILE = Path(__file__).resolve().parents[1] / "data" / "common-passwords.txt"
# Words that stay guessable whatever is added around them ("Password2026!!", "Welcome-12345").
WEAK_WORDS = frozenset(
    [
        "password",
        "passwort",
        "passw0rd",
        "qwerty",
        "qwertyuiop",
        "asdfgh",
        "asdfghjkl",
        "zxcvbnm",
        "letmein",
        "welcome",
        "iloveyou",
        "admin",
        "administrator",
        "changeme",
        "secret",
        "master",
        "monkey",
        "dragon",
        "football",
        "baseball",
        "superman",
        "batman",
        "trustno1",
        "whatever",
        "freedom",
        "login",
        "access",
        "default",
        "guest",
        "user",
        "manager",
        "summer",
        "winter",
        "spring",
        "autumn",
        "sunshine",
        "shadow",
        "princess",
        "customer",
        "success",
        "customersuccess",
        "csm",
        "csmportal",
        "portal",
        "company",
        "test",
        "testing",
        "demo",
        "abc",
        "abcdef",
        "abcdefg",
        "qwe",
        "asd",
        "zxc",
    ]
)
_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "1": "l", "!": "i", "3": "e", "$": "s", "5": "s", "7": "t"})
_EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (server/data/common-passwords.txt), lower case."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(password: str, email: str = "") -> str | None:
    """Why a password is refused, or None.

    At least 12 characters (of any kind: no composition rules), at most 1024, not on the list of
    common passwords (also after undoing l33t substitutions), not a weak word dressed up with
    digits and symbols, not mostly one character, and not the email address or its name part.
    The password is used exactly as typed: nothing is trimmed or truncated.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must be at least {MIN_PASSWORD_LENGTH} characters long"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"the password may be at most {MAX_PASSWORD_LENGTH} characters long"
    lowered = unicodedata.normalize("NFKC", password).lower()
    common = common_passwords()
    unleeted = lowered.translate(_LEET)
    core = _EDGES.sub("", lowered)
    if (
        lowered in common
        or unleeted in common
        or core in WEAK_WORDS
        or core.translate(_LEET) in WEAK_WORDS
        or _EDGES.sub("", unleeted) in WEAK_WORDS
        or len(set(lowered)) < 4
    ):
        return "this password is among the most common ones; choose another"
    address = email.strip().lower()
    if address:
        name = address.split("@", 1)[0]
        if address in lowered or (len(name) >= 4 and name in lowered):
            return "the password may not contain your email address"
    return None


def _check_email(email: str) -> str:
    email = email.strip()
    if len(email) > 320 or not EMAIL.fullmatch(email):
        raise InvalidInput("that is not an email address", field="email")
    return email


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role '{role}'; expected one of {', '.join(Role)}", field="role") from None


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


async def list_users(session: AsyncSession) -> Sequence[User]:
    return (await session.scalars(select(User).order_by(func.lower(User.email)))).all()


async def _new_user(session: AsyncSession, email: str, role: str, name: str) -> tuple[str, Role]:
    email = _check_email(email)
    role_value = _check_role(role)
    if await find_by_email(session, email) is not None:
        raise Conflict(f"a user with the email {email} exists already", field="email")
    if len(name) > 200:
        raise InvalidInput("the name may be at most 200 characters long", field="name")
    return email, role_value


async def create_user(
    session: AsyncSession, email: str, role: str, password: str, name: str = "", who: Who | None = None
) -> User:
    email, role_value = await _new_user(session, email, role, name)
    problem = password_problem(password, email)
    if problem:
        raise InvalidInput(problem, field="password")
    user = User(
        email=email,
        role=role_value.value,
        name=name.strip(),
        password_hash=await hash_password(password),
        password_changed_at=utcnow(),
    )
    session.add(user)
    await session.flush()
    await record_as(
        session,
        who or Who("system"),
        "user.created",
        object_type="user",
        object_id=email,
        after={"email": email, "role": role_value.value, "name": user.name},
    )
    return user


async def invite_user(session: AsyncSession, email: str, role: str, name: str, who: Who, emailed: bool = False) -> User:
    """A user without a password yet: they choose one through a set-password link (`emailed`: the
    security-email sender mails it to them)."""
    email, role_value = await _new_user(session, email, role, name)
    user = User(email=email, role=role_value.value, name=name.strip(), password_hash=None)
    session.add(user)
    await session.flush()
    await record_as(
        session,
        who,
        "user.invited",
        object_type="user",
        object_id=email,
        after={"email": email, "role": role_value.value, "name": user.name},
        detail={"emailed": emailed},
    )
    return user


async def end_sessions(session: AsyncSession, user: User) -> None:
    """End every session of `user` at once: sessions carry the epoch they were made in."""
    await session.execute(
        update(User).where(User.id == user.id).values(session_epoch=User.session_epoch + 1, updated_at=utcnow())
    )
    await session.refresh(user, ["session_epoch", "updated_at"])


async def set_password(session: AsyncSession, user: User, password: str, who: Who, action: str) -> None:
    """Set a new password (policy checked) and end every session of the user."""
    problem = password_problem(password, user.email)
    if problem:
        raise InvalidInput(problem, field="password")
    if user.password_hash and await verify_password(user.password_hash, password):
        raise InvalidInput("the new password must differ from the current one", field="password")
    user.password_hash = await hash_password(password)
    user.password_changed_at = utcnow()
    await session.flush()
    await end_sessions(session, user)
    await record_as(session, who, action, object_type="user", object_id=user.email)


def password_fingerprint(user: User) -> str:
    """Changes whenever the password or the session epoch changes (binds one-time links to both)."""
    material = f"{user.password_hash or ''}|{user.session_epoch}|{user.active}"
    return hashlib.sha256(material.encode()).hexdigest()[:24]


async def change_role(session: AsyncSession, user: User, role: str, who: Who, actor_id: int | None) -> None:
    role_value = _check_role(role)
    if actor_id is not None and user.id == actor_id:
        raise Forbidden("you cannot change your own role; ask another admin")
    if user.role == role_value.value:
        return
    if user.role == Role.ADMIN and await _other_active_admins(session, user.id) == 0:
        raise Conflict("this is the last active admin; make another admin first", field="role")
    before = user.role
    user.role = role_value.value
    user.updated_at = utcnow()
    await session.flush()
    await end_sessions(session, user)
    await record_as(
        session,
        who,
        "user.role_changed",
        object_type="user",
        object_id=user.email,
        before={"role": before},
        after={"role": role_value.value},
    )


async def _other_active_admins(session: AsyncSession, user_id: int) -> int:
    count = await session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.ADMIN, User.active, User.id != user_id)
    )
    return int(count or 0)


async def set_active(session: AsyncSession, user: User, active: bool, who: Who, actor_id: int | None) -> None:
    if actor_id is not None and user.id == actor_id:
        raise Forbidden("you cannot deactivate yourself")
    if user.active == active:
        return
    if not active and user.role == Role.ADMIN and await _other_active_admins(session, user.id) == 0:
        raise Conflict("this is the last active admin; make another admin first")
    user.active = active
    user.updated_at = utcnow()
    await session.flush()
    await end_sessions(session, user)
    await record_as(
        session,
        who,
        "user.activated" if active else "user.deactivated",
        object_type="user",
        object_id=user.email,
        before={"active": not active},
        after={"active": active},
    )


async def reset_two_factor(session: AsyncSession, user: User, who: Who) -> None:
    """Remove a user's two-factor set-up (a lost phone): they enrol again at next sign-in if required."""
    was = user.totp_enabled
    await twofactor.disable(session, user)
    await end_sessions(session, user)
    await record_as(
        session,
        who,
        "user.2fa_reset",
        object_type="user",
        object_id=user.email,
        before={"totp_enabled": was},
        after={"totp_enabled": False},
    )


# ── set-password links (invitations, resets by an admin, forgotten passwords) ───────────

SET_PASSWORD_SALT = "csm-set-password"  # noqa: S105 - a signing purpose, not a password
SET_PASSWORD_MAX_AGE = 72 * 3600


def _set_password_signer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret(), salt=SET_PASSWORD_SALT)


def set_password_link(settings: Settings, user: User) -> str:
    """A one-time, expiring link to choose a password: bound to the user's current password and
    session epoch, so it stops working once used, when another link is issued, or on deactivation."""
    token = _set_password_signer(settings).dumps({"u": user.id, "f": password_fingerprint(user)})
    return f"{settings.base_url.rstrip('/')}/login/invite/{token}"


async def user_of_set_password_link(session: AsyncSession, settings: Settings, token: str) -> User | None:
    """The active user a set-password link is for, or None: forged, expired, used or superseded."""
    try:
        payload = _set_password_signer(settings).loads(token, max_age=SET_PASSWORD_MAX_AGE)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(payload, dict):
        return None
    user = await session.get(User, payload.get("u"))
    if user is None or not user.active or payload.get("f") != password_fingerprint(user):
        return None
    return user
