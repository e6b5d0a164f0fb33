"""The JSON API under /api: the twin of every portal page and action."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
