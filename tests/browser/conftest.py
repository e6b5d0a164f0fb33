"""Browser tests: the real server (uvicorn, in a subprocess) on a demo database, driven through
Playwright by Debian's Chromium (never `playwright install`).

Every page a test visits is watched: a console error or an uncaught script error fails the test.
Screenshots of the main pages land in test-results/screenshots/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from bench.demo_db import build
from server.services.demo_history import DEMO_PASSWORD
from tests.services import free_port, unavailable
from tests.smtp import Mailbox, smtp_server

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-results" / "screenshots"
ACCOUNTS = 300
WEEKS = 6
TIMEZONE = "Europe/Berlin"


@dataclass
class DemoServer:
    url: str
    users: dict[str, str]
    database_url: str
    mailbox: Mailbox  # the server sends its emails here

    def csm(self, index: int = 0) -> str:
        return [email for email, role in self.users.items() if role == "csm"][index]


@pytest.fixture(scope="session")
def demo_mailbox() -> Iterator[Mailbox]:
    with smtp_server() as mailbox:
        yield mailbox


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory, demo_mailbox: Mailbox) -> Iterator[DemoServer]:
    if shutil.which("chromium") is None:
        unavailable("Debian's chromium is not installed", "apt-get install -y chromium")
    folder = tmp_path_factory.mktemp("browser-demo")
    database = folder / "csm.db"
    today = dt.datetime.now(ZoneInfo(TIMEZONE)).date()
    job = build(f"sqlite+aiosqlite:///{database}", folder / "snapshots", accounts=ACCOUNTS, weeks=WEEKS, as_of=today)
    # In a thread of its own: Playwright's sync API may already run an event loop in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        users = pool.submit(asyncio.run, job).result()
    port = free_port()
    env = {
        **os.environ,
        "CSM_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "CSM_SECRET_KEY": "browser-tests-secret-key-0123456789",
        "CSM_POLICY_DIR": str(ROOT / "policies"),
        "CSM_TIMEZONE": TIMEZONE,
        "CSM_BASE_URL": f"http://127.0.0.1:{port}",
        "PYTHONWARNINGS": "ignore",
        **demo_mailbox.env(),
    }
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "server.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"the server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield DemoServer(base, users, f"sqlite+aiosqlite:///{database}", demo_mailbox)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Chromium for one module: Playwright's sync API runs an event loop in this thread while it
    is open, which must be closed again before other tests call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        unavailable("Debian's chromium is not installed", "apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--disable-gpu"])
        yield browser
        browser.close()


@dataclass
class Problems:
    """Console errors and uncaught exceptions seen on any page of a test."""

    seen: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.seen.append(f"{page.url}: console.{message.type}: {message.text} (at {message.location})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.seen.append(f"{page.url}: page error: {error}"))


@dataclass
class Session:
    page: Page
    server: DemoServer
    problems: Problems

    def go(self, path: str) -> None:
        self.page.goto(self.server.url + path)
        self.page.wait_for_load_state("networkidle")

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def sign_in(page: Page, server: DemoServer, email: str) -> None:
    page.goto(server.url + "/login")
    page.fill("#email", email)
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")


def _session(chromium: Browser, demo_server: DemoServer, email: str) -> Iterator[Session]:
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    sign_in(page, demo_server, email)
    yield Session(page, demo_server, problems)
    context.close()
    assert problems.seen == [], "\n".join(problems.seen)


@pytest.fixture
def csm_session(chromium: Browser, demo_server: DemoServer) -> Iterator[Session]:
    """A CSM, signed in; fails the test if any page logged an error."""
    yield from _session(chromium, demo_server, demo_server.csm(0))


@pytest.fixture
def manager_session(chromium: Browser, demo_server: DemoServer) -> Iterator[Session]:
    yield from _session(chromium, demo_server, "manager@demo.csm")


@pytest.fixture
def ops_session(chromium: Browser, demo_server: DemoServer) -> Iterator[Session]:
    yield from _session(chromium, demo_server, "ops@demo.csm")
