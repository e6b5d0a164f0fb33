"""The portal's pages: Customer Overview, CSM Dashboard, Customer Detail, tags and saved filters."""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
