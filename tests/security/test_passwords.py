"""The password policy and how passwords are stored."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type
from sqlalchemy import select

import server.web.auth as auth
from server.db.models import User
from server.services.users import common_passwords, password_problem
from tests.security.helpers import PASSWORD, Browser, database, running, seed_users, user_row


@pytest.mark.parametrize(
    ("password", "email", "refused"),
    [
        ("short pass", "", "at least 12"),
        ("x" * 1025, "", "at most 1024"),
        ("password1234", "", "common"),
        ("Password1234", "", "common"),
        ("P@ssw0rd1234", "", "common"),
        ("Password2026!!", "", "common"),
        ("!!Welcome!!12345", "", "common"),
        ("qwertyuiop123", "", "common"),
        ("1q2w3e4r5t6y", "", "common"),
        ("aaaaaaaaaaaaaaaa", "", "common"),
        ("abababababababab", "", "common"),
        ("iloveyou2024", "", "common"),
        ("customersuccess1", "", "common"),
        ("jane.doe@example.com", "jane.doe@example.com", "email"),
        ("my name is jane.doe!", "jane.doe@example.com", "email"),
        ("correct horse battery staple", "", None),
        ("csm-demo-2026!", "admin@demo.csm", None),  # the printed demo password stays usable
        ("Tr0ub4dor&3xyz", "", None),
        ("zwölf Zeichen ünd mehr", "", None),  # any characters
        ("x" * 1024 + "", "", "common"),  # long but one character
        ("a9" + "b7" * 511, "", None),  # 1024 characters are fine
    ],
)
def test_password_policy(password: str, email: str, refused: str | None) -> None:
    problem = password_problem(password, email)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def test_the_common_password_list() -> None:
    words = common_passwords()
    assert len(words) >= 300
    assert all(len(word) >= 12 and word == word.lower() for word in words)
    assert "csm-demo-2026!" not in words


@pytest.mark.real_hashing
def test_production_hashing_parameters() -> None:
    """Argon2id at or above the OWASP minimum (m = 19 MiB, t = 2, p = 1)."""
    assert auth.HASHER.type is Type.ID
    stored = auth.HASHER.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$")
    settings = dict(part.split("=") for part in stored.split("$")[3].split(","))
    assert int(settings["m"]) >= 19456 and int(settings["t"]) >= 2 and int(settings["p"]) >= 1


@pytest.mark.real_hashing
async def test_hashes_are_upgraded_at_sign_in(database_url: str) -> None:
    """A hash made with weaker parameters is replaced by a current one when the user signs in."""
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    await seed_users(database_url, ("csm@example.com", "csm"))
    async with database(database_url) as session:
        user = await session.scalar(select(User).where(User.email == "csm@example.com"))
        assert user is not None
        user.password_hash = weak.hash(PASSWORD)
    async with running(database_url) as client:
        assert (await Browser(client).login("csm@example.com")).status_code == 303
    upgraded = (await user_row(database_url, "csm@example.com")).password_hash or ""
    assert upgraded.startswith("$argon2id$") and "m=65536,t=3,p=4" in upgraded
    assert not auth.needs_rehash(upgraded)


def test_no_truncation_and_exact_comparison() -> None:
    stored = auth.HASHER.hash("a" * 100 + "b")
    assert auth._verify(stored, "a" * 100 + "b")
    assert not auth._verify(stored, "a" * 100)
    assert not auth._verify(stored, "a" * 100 + "b ")
    assert not auth._verify(None, "a" * 100 + "b")
