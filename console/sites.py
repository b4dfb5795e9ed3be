"""The admin site of the operator console: Django's, plus a live dashboard page."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path

from fleet import access

DASHBOARD_REFRESH_S = 10


class ConsoleAdminSite(admin.AdminSite):
    site_header = "v2g operator console"
    site_title = "v2g"
    index_title = "Fleet operations"
    index_template = "admin/console/index.html"

    def get_urls(self):
        return [
            path("dashboard/", self.admin_view(self.dashboard_view), name="dashboard"),
            *super().get_urls(),
        ]

    def dashboard_view(self, request):
        """Charts drawn in the browser from GET /api/dashboard/summary (the
        session's fleets), refreshed every few seconds."""
        ids = access.user_fleet_ids(request.user)
        context = {
            **self.each_context(request),
            "title": "Dashboard",
            "refresh_s": DASHBOARD_REFRESH_S,
            "fleets": "every fleet" if ids is None else (", ".join(sorted(ids)) or "no fleet assigned"),
            "time_zone": settings.V2G.scheduler.time_zone,
        }
        return TemplateResponse(request, "admin/console/dashboard.html", context)
