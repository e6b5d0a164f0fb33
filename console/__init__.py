"""The admin console for CSM ops: policies (edit, validate, test, dry-run, publish, roll back), runs, connectors."""

from __future__ import annotations

from typing import Any

from console import connectors, policies, runs

ROUTES: list[Any] = [*policies.ROUTES, *runs.ROUTES, *connectors.ROUTES]
