"""Users: creation with a password policy, roles, deactivation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import User
from server.errors import Conflict, InvalidInput
from server.web.access import Role
from server.web.auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, hash_password

# The most common passwords of at least 12 characters (from public breach corpora); refused outright.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "qwertyuiopas",
        "qwerty123456",
        "password1234",
        "password12345",
        "passwordpassword",
        "iloveyou1234",
        "administrator",
        "1q2w3e4r5t6y",
        "qwertyuiop123",
        "abcdefghijkl",
        "abc123456789",
        "letmein12345",
        "welcome12345",
        "changeme1234",
        "111111111111",
        "000000000000",
        "aaaaaaaaaaaa",
        "monkey123456",
        "football1234",
        "baseball1234",
        "superman1234",
        "trustno11234",
        "passw0rd1234",
        "p@ssw0rd1234",
        "qazwsxedcrfv",
        "1qaz2wsx3edc",
        "zaq12wsxcde3",
    }
)


def password_problem(password: str, email: str = "") -> str | None:
    """Why a password is refused, or None (length, common passwords, the email itself)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must be at least {MIN_PASSWORD_LENGTH} characters long"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"the password may be at most {MAX_PASSWORD_LENGTH} characters long"
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS or len(set(lowered)) < 4:
        return "this password is among the most common ones; choose another"
    if email and lowered == email.lower():
        return "the password may not be your email address"
    return None


async def create_user(session: AsyncSession, email: str, role: str, password: str, name: str = "") -> User:
    email = email.strip()
    if "@" not in email or len(email) > 320:
        raise InvalidInput(f"'{email}' is not an email address", field="email")
    try:
        role_value = Role(role)
    except ValueError:
        raise InvalidInput(f"unknown role '{role}'; expected one of {', '.join(Role)}", field="role") from None
    problem = password_problem(password, email)
    if problem:
        raise InvalidInput(problem, field="password")
    existing = await session.scalar(select(User).where(User.email == email))
    if existing is not None:
        raise Conflict(f"a user with the email {email} exists already", field="email")
    user = User(email=email, role=role_value.value, name=name, password_hash=await hash_password(password))
    session.add(user)
    await session.flush()
    return user
