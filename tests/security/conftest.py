"""The security suite: fast password hashing except where the real parameters are the point, and
a clock tests can move forward."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

import server.services.twofactor as twofactor
import server.web.auth as auth
from server.web import clock
from tests.security.helpers import MovedClock

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def fast_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with tiny parameters: the flows are what these tests check (see test_passwords for the real ones)."""
    if request.node.get_closest_marker("real_hashing"):
        return
    monkeypatch.setattr(auth, "HASHER", FAST)
    monkeypatch.setattr(auth, "_DUMMY_HASH", FAST.hash("dummy password for unknown emails"))
    monkeypatch.setattr(twofactor, "RECOVERY_HASHER", FAST)


@pytest.fixture
def moved_clock(monkeypatch: pytest.MonkeyPatch) -> MovedClock:
    moved = MovedClock(clock.now)
    monkeypatch.setattr(clock, "now", moved.now)
    return moved


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_hashing: use the production Argon2id parameters")
