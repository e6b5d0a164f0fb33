"""Administration pages: users and roles, two-factor settings, the audit log."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
