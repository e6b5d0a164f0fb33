"""With CSM_REDIS_URL set, sessions and attempt counters live in Redis: the same guarantees hold."""

from __future__ import annotations

import uuid

import pytest

from server.web.limits import LOGIN_ACCOUNT
from tests.security.helpers import Browser, location, running, seed_users
from tests.services import REDIS_URL, require

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> str:
    require("redis", REDIS_URL)
    return REDIS_URL


async def test_sessions_and_limits_in_redis(sqlite_url: str, redis_url: str) -> None:
    email = f"csm-{uuid.uuid4().hex[:8]}@example.com"  # counters outlive the test in Redis: a fresh account
    await seed_users(sqlite_url, (email, "csm"))
    async with running(sqlite_url, CSM_REDIS_URL=redis_url) as client:
        planted = "c" * 64
        browser = Browser(client, cookies={"csm_session": planted})
        response = await browser.login(email)
        assert response.status_code == 303 and location(response) == "/"
        assert browser.session and browser.session != planted
        assert (await browser.get("/settings/security")).status_code == 200
        assert (await Browser(client, cookies={"csm_session": planted}).get("/settings/security")).status_code == 302
        await browser.post("/logout")
        assert (await browser.get("/settings/security")).status_code == 302

        for _ in range(LOGIN_ACCOUNT.attempts):
            assert (
                await Browser(client).post("/login", {"email": email, "password": "wrong guess 123"})
            ).status_code == 401
        blocked = await Browser(client).login(email)
        assert blocked.status_code == 429 and 0 < int(blocked.headers["retry-after"]) <= LOGIN_ACCOUNT.window
    async with running(sqlite_url, CSM_REDIS_URL=redis_url) as client:  # shared by every process, kept over restarts
        assert (await Browser(client).login(email)).status_code == 429
