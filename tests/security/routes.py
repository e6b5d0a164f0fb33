"""The app's route table, seen by the security tests: every handler with the access it declares.

The access rule (docs/security.md): each handler is either public (`opt=PUBLIC`, path listed in
`server.web.access.PUBLIC_ROUTES`), or for any signed-in user (`opt=SIGNED_IN`), or guarded by
`requires(capability)`. Framework routes (static files, the OpenAPI document) are named here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from server.web.access import ACCESS, PUBLIC_ROUTES, Capability

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Handlers Litestar makes itself: static files (public by design) and the OpenAPI document (signed-in).
STATIC_NAMES = re.compile(r"^(static|vendor_[a-z]+)(/head)?$")
OPENAPI_PREFIX = "/api/schema"
PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


@dataclass(frozen=True)
class RouteCase:
    path: str
    method: str
    handler: HTTPRouteHandler
    access: str | None  # "public" | "signed-in" | "capability" | "static" | "openapi" | None (no rule!)
    capabilities: frozenset[Capability]

    @property
    def params(self) -> list[tuple[str, str]]:
        return [(name, kind or "str") for name, kind in PARAM.findall(self.path)]

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def _access(path: str, handler: HTTPRouteHandler) -> tuple[str | None, frozenset[Capability]]:
    capabilities = frozenset(
        capability
        for guard in handler.resolve_guards()
        if (capability := getattr(getattr(guard, "func", guard), "capability", None))
    )
    if capabilities:
        return "capability", capabilities
    declared = handler.opt.get(ACCESS)
    if declared in ("public", "signed-in"):
        return declared, capabilities
    if handler.name and STATIC_NAMES.match(handler.name):
        return "static", capabilities
    if path == OPENAPI_PREFIX or path.startswith(OPENAPI_PREFIX + "/"):
        return "openapi", capabilities
    return None, capabilities


def route_cases(app: Litestar) -> list[RouteCase]:
    cases = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            methods = set(handler.http_methods)
            if methods == {"OPTIONS"} and not handler.opt.get(ACCESS):
                continue  # Litestar's automatic OPTIONS answer: no data, no state
            access, capabilities = _access(route.path, handler)
            for method in sorted(methods - {"OPTIONS"}):
                cases.append(RouteCase(route.path, method, handler, access, capabilities))
    return sorted(cases, key=lambda case: (case.path, case.method))


def excluded_from_auth(app: Litestar, case: RouteCase) -> bool:
    if case.handler.opt.get("exclude_from_auth"):
        return True
    from server.app import PUBLIC_PATHS

    return any(re.match(pattern, case.path) for pattern in PUBLIC_PATHS)


def rule_violations(app: Litestar) -> list[str]:
    """Everything that breaks the access rule, in words (empty when the route table is sound)."""
    problems = []
    for case in route_cases(app):
        excluded = excluded_from_auth(app, case)
        if case.access is None:
            problems.append(f"{case.id}: no access rule (requires(...), opt=SIGNED_IN or opt=PUBLIC)")
        elif case.access == "public" and case.path not in PUBLIC_ROUTES:
            problems.append(f"{case.id}: public but not in server.web.access.PUBLIC_ROUTES")
        elif case.access == "public" and not excluded:
            problems.append(f"{case.id}: declared public but sign-in is still required")
        elif case.access in ("signed-in", "capability", "openapi") and excluded:
            problems.append(f"{case.id}: needs a signed-in user but is excluded from authentication")
        if case.access == "static" and case.method in STATE_CHANGING:
            problems.append(f"{case.id}: static files must not change state")
    return problems


def concrete(case: RouteCase, values: dict[str, Any]) -> str:
    """The path with its parameters filled in from `values` (by name, else a default by type)."""

    def fill(match: re.Match[str]) -> str:
        name, kind = match[1], match[2] or "str"
        if name in values:
            return str(values[name])
        return "1" if kind == "int" else "x"

    return PARAM.sub(fill, case.path)
