"""Who may do what: the roles of PRODUCT.md and the checks every route and every object goes through.

- admin: everything;
- ops: policies, runs, connectors; reads all customers;
- manager: reads and edits all customers' tasks;
- csm: reads and edits only the customers assigned to them;
- viewer: read-only, all customers.

The route access rule (docs/security.md; enforced by tests/security/test_route_table.py): every
route handler declares who may call it, in exactly one of three ways:

- a guard made by `requires(capability)` (on the handler, its controller or router);
- `opt=SIGNED_IN` for pages every signed-in user may open (their own settings, sign-out...);
- `opt=PUBLIC` (with `exclude_from_auth=True`) for the few public pages, which must also be in
  `PUBLIC_ROUTES` below (sign-in, set-password links, health check, static files).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import ColumnElement, true

from server.db.models import Account


class Role(StrEnum):
    ADMIN = "admin"
    OPS = "ops"
    MANAGER = "manager"
    CSM = "csm"
    VIEWER = "viewer"


class Capability(StrEnum):
    READ_CUSTOMERS = "read customers"
    EDIT_TASKS = "edit tasks"
    EDIT_CUSTOMERS = "edit customers"  # tags, sentiment, meeting outcomes
    MANAGE_POLICIES = "manage policies"
    MANAGE_RUNS = "manage runs"
    MANAGE_USERS = "manage users"
    READ_AUDIT = "read the audit log"


CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.OPS: frozenset({Capability.READ_CUSTOMERS, Capability.MANAGE_POLICIES, Capability.MANAGE_RUNS}),
    Role.MANAGER: frozenset({Capability.READ_CUSTOMERS, Capability.EDIT_TASKS, Capability.EDIT_CUSTOMERS}),
    Role.CSM: frozenset({Capability.READ_CUSTOMERS, Capability.EDIT_TASKS, Capability.EDIT_CUSTOMERS}),
    Role.VIEWER: frozenset({Capability.READ_CUSTOMERS}),
}


@dataclass(frozen=True)
class CurrentUser:
    id: int
    email: str
    name: str
    role: Role

    def can(self, capability: Capability) -> bool:
        return capability in CAPABILITIES[self.role]

    @property
    def sees_every_customer(self) -> bool:
        return self.role != Role.CSM

    def customer_filter(self) -> ColumnElement[bool]:
        """SQL condition for the customers this user may see (a CSM: only their own)."""
        return true() if self.sees_every_customer else Account.csm == self.email

    def may_see(self, account: Account) -> bool:
        return self.sees_every_customer or account.csm == self.email


ACCESS = "access"
SIGNED_IN: dict[str, Any] = {ACCESS: "signed-in"}
PUBLIC: dict[str, Any] = {ACCESS: "public", "exclude_from_auth": True}
# Route paths open without signing in. Adding one here is a security decision: say why in review.
PUBLIC_ROUTES = frozenset(
    {
        "/login",
        "/login/2fa",
        "/login/recovery",
        "/login/enrol",
        "/login/invite/{token:str}",
        "/login/reset",  # a forgotten password: emails a set-password link, says the same for any address
        "/go/{token:str}",  # a digest's deep link: checks its signature, then the page asks for a session
        "/logout",
        "/healthz",
    }
)
# Fields that no form or API body may set unless the route exists to set them (mass assignment).
PROTECTED_FIELDS = frozenset(
    {"role", "csm", "active", "id", "user_id", "email", "session_epoch", "totp_enabled", "totp_secret", "owner"}
)


def reject_protected_fields(submitted: Any, allowed: frozenset[str] | set[str] = frozenset()) -> None:
    """Refuse (403, logged as access.denied) a body that tries to set a protected field it may not.

    `submitted` is the parsed form or JSON object; `allowed` the protected fields this route sets
    on purpose (e.g. the admin's role change sets `role`).
    """
    keys = set(submitted.keys()) if hasattr(submitted, "keys") else set()
    forbidden = sorted((keys & PROTECTED_FIELDS) - set(allowed))
    if forbidden:
        raise PermissionDeniedException(
            f"this request may not set {', '.join(forbidden)}", extra={"reason": "mass-assignment"}
        )


def requires(capability: Capability) -> Any:
    """A route guard: the signed-in user must have `capability` (else 403, logged by the error handler)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        user = connection.scope.get("user")
        if not isinstance(user, CurrentUser):
            raise NotAuthorizedException("sign in first")
        if not user.can(capability):
            raise PermissionDeniedException(f"your role ({user.role}) may not {capability}")

    guard.capability = capability  # type: ignore[attr-defined]  # read by the route-table access test
    return guard
