"""Security headers on every response (ASVS V3): CSP without inline scripts, no framing, no sniffing.

A `before_send` hook rather than a middleware: it also sees the responses made outside the route
middleware stack (the sign-in redirect of the authentication middleware, the router's 404/405).
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import Message, Scope

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


# The console's preview of a digest email is the email's own HTML, styled inline as mail
# clients need: inline styles allowed, nothing else (no scripts, no loads, no forms).
EMAIL_PREVIEW_PATH = "/console/connectors/digest"
EMAIL_PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def add_security_headers(hsts: bool) -> Any:
    """A `before_send` hook: it sees every response of the app, including those made by the
    authentication middleware (redirects to sign-in) and by the router (404, 405)."""

    def hook(message: Message, scope: Scope) -> None:
        if scope["type"] != ScopeType.HTTP or message["type"] != "http.response.start":
            return
        path = scope.get("path", "")
        headers = MutableScopeHeaders.from_message(message)
        headers["Content-Security-Policy"] = (
            EMAIL_PREVIEW_POLICY if path == EMAIL_PREVIEW_PATH else CONTENT_SECURITY_POLICY
        )
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if not path.startswith(("/static/", "/vendor/")):
            headers["Cache-Control"] = "no-store"
        if hsts:
            headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"

    return hook
