"""Who may do what: the roles of PRODUCT.md and the checks every route and every object goes through.

- admin: everything;
- ops: policies, runs, connectors; reads all customers;
- manager: reads and edits all customers' tasks;
- csm: reads and edits only the customers assigned to them;
- viewer: read-only, all customers.
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
