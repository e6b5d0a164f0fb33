"""Administration pages: users and roles, two-factor settings, the audit log."""

from __future__ import annotations

from typing import Any

from server.admin.audit import ROUTES as AUDIT_ROUTES
from server.admin.users import ROUTES as USER_ROUTES

ROUTES: list[Any] = [*USER_ROUTES, *AUDIT_ROUTES]
