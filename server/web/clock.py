"""The wall clock of the security code (sessions, re-authentication, TOTP, attempt limits).

Call `clock.now()` through the module, so that tests can move time with one monkeypatch.
"""

from __future__ import annotations

import time


def now() -> float:
    return time.time()
