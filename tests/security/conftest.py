"""The security suite: fast password hashing except where the real parameters are the point."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

import server.services.twofactor as twofactor
import server.web.auth as auth

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def fast_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with tiny parameters: the flows are what these tests check (see test_passwords for the real ones)."""
    if request.node.get_closest_marker("real_hashing"):
        return
    monkeypatch.setattr(auth, "HASHER", FAST)
    monkeypatch.setattr(auth, "_DUMMY_HASH", FAST.hash("dummy password for unknown emails"))
    monkeypatch.setattr(twofactor, "RECOVERY_HASHER", FAST)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_hashing: use the production Argon2id parameters")
