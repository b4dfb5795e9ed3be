"""Operator screens for the KPIs: the stored rows, read-only (they are
recomputed from the commands and telemetry, never edited), filtered by day and fleet, with
the totals of the filtered rows above the list (fleet totals: filter by fleet)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from fleet import access
from fleet.admin_scope import FleetScopedAdmin, fleet_ids
from fleet.models import Fleet
from kpis import selectors, services
from kpis.forms import KpiBackfillForm
from kpis.models import VehicleDayKpi


@admin.register(VehicleDayKpi)
class VehicleDayKpiAdmin(FleetScopedAdmin):
    fleet_field = "vehicle__fleet_id"
    list_display = (
        "day",
        "vehicle",
        "fleet",
        "injected_kwh",
        "consumed_kwh",
        "co2_avoided_g",
        "energy_ratio",
        "measured_share",
        "computed_at",
    )
    list_filter = (("day", admin.DateFieldListFilter), ("vehicle__fleet", admin.RelatedOnlyFieldListFilter))
    date_hierarchy = "day"
    search_fields = ("vehicle__id",)
    list_select_related = ("vehicle",)
    ordering = ("-day", "vehicle_id")

    @admin.display(description="fleet", ordering="vehicle__fleet_id")
    def fleet(self, obj: VehicleDayKpi) -> str:
        return obj.vehicle.fleet_id

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "may_backfill": self.has_backfill_permission(request)}
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            totals = selectors.queryset_totals(changelist.queryset)
            totals["co2_avoided_kg"] = totals["co2_avoided_g"] / 1000
            response.context_data["kpi_totals"] = totals
        return response

    # --- backfill: recompute a range of days in a worker ---------------------------------

    def has_backfill_permission(self, request) -> bool:
        return request.user.has_perm("kpis.change_vehicledaykpi")

    def get_urls(self):
        view = self.admin_site.admin_view(self.backfill_view)
        return [path("backfill/", view, name="kpis_vehicledaykpi_backfill"), *super().get_urls()]

    def backfill_view(self, request):
        """A range of local days (and a fleet) whose KPIs the Celery task
        ``kpis.backfill`` recomputes; the form validates the range."""
        if not self.has_backfill_permission(request):
            raise PermissionDenied
        ids = fleet_ids(request)
        fleets = access.filter_fleets(Fleet.objects.all(), ids, "id").values_list("id", "name")
        form = KpiBackfillForm(
            request.POST or None,
            fleet_choices=[(fleet_id, f"{fleet_id} ({name})") for fleet_id, name in fleets],
            fleet_required=ids is not None,  # an operator of some fleets backfills one of them
            today=services.local_today(),
        )
        if request.method == "POST" and form.is_valid():
            from kpis.tasks import kpis_backfill_task

            start, end = form.cleaned_data["start"], form.cleaned_data["end"]
            fleet_id = form.cleaned_data["fleet"] or None
            result = kpis_backfill_task.delay(start.isoformat(), end.isoformat(), fleet_id)
            what = f"KPIs {start}..{end} of {f'fleet {fleet_id}' if fleet_id else 'every fleet'}"
            self.log_about(request, VehicleDayKpi, what, f"Backfill enqueued (task {result.id})")
            self.message_user(
                request,
                f"Backfill of the {what} enqueued (task {result.id}); the rows are replaced day by day.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:kpis_vehicledaykpi_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Backfill KPIs",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/kpis/vehicledaykpi/backfill.html", context)
