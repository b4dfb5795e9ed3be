"""Operator screens for the KPIs: the stored rows, read-only (they are
recomputed from the commands and telemetry, never edited), filtered by day and fleet, with
the totals of the filtered rows above the list (fleet totals: filter by fleet)."""

from __future__ import annotations

from django.contrib import admin

from kpis import selectors
from kpis.models import VehicleDayKpi


@admin.register(VehicleDayKpi)
class VehicleDayKpiAdmin(admin.ModelAdmin):
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
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            totals = selectors.queryset_totals(changelist.queryset)
            totals["co2_avoided_kg"] = totals["co2_avoided_g"] / 1000
            response.context_data["kpi_totals"] = totals
        return response
