"""The portal's pages: Customer Overview, CSM Dashboard, Customer Detail, tags, saved filters, settings."""

from __future__ import annotations

from typing import Any

from server.portal.customer import ROUTES as CUSTOMER_ROUTES
from server.portal.dashboard import ROUTES as DASHBOARD_ROUTES
from server.portal.manage import ROUTES as MANAGE_ROUTES
from server.portal.overview import ROUTES as OVERVIEW_ROUTES

ROUTES: list[Any] = [*OVERVIEW_ROUTES, *DASHBOARD_ROUTES, *CUSTOMER_ROUTES, *MANAGE_ROUTES]
