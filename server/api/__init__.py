"""The JSON API under /api: the twin of every portal page and action."""

from __future__ import annotations

from typing import Any

from server.api.portal import ROUTES as PORTAL_API_ROUTES

ROUTES: list[Any] = [*PORTAL_API_ROUTES]
