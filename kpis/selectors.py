"""Reads of the stored KPIs."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet, Sum

from kpis import domain
from kpis.models import VehicleDayKpi

ROW_FIELDS = (
    "day",
    "injected_kwh",
    "consumed_kwh",
    "co2_avoided_g",
    "energy_ratio",
    "measured_share",
    "computed_at",
)


def vehicle_kpis(vehicle_id: str, start: dt.date, end: dt.date) -> dict:
    """A vehicle's stored day rows in [start, end] (days without energy have no
    row) and their totals; the totals' ratio is None when nothing was consumed."""
    rows = list(
        VehicleDayKpi.objects.filter(vehicle_id=vehicle_id, day__gte=start, day__lte=end)
        .order_by("day")
        .values(*ROW_FIELDS)
    )
    return {
        "vehicle_id": vehicle_id,
        "start": start,
        "end": end,
        "days": rows,
        "totals": totals(rows),
    }


def totals(rows) -> dict:
    injected = sum(row["injected_kwh"] for row in rows)
    consumed = sum(row["consumed_kwh"] for row in rows)
    return {
        "days": len(rows),
        "injected_kwh": round(injected, 6),
        "consumed_kwh": round(consumed, 6),
        "co2_avoided_g": round(sum(row["co2_avoided_g"] for row in rows), 3),
        "energy_ratio": domain.energy_ratio(injected, consumed),
    }


def queryset_totals(queryset: QuerySet) -> dict:
    """Totals of a queryset of VehicleDayKpi (the admin's filtered rows)."""
    sums = queryset.aggregate(
        injected_kwh=Sum("injected_kwh"), consumed_kwh=Sum("consumed_kwh"), co2_avoided_g=Sum("co2_avoided_g")
    )
    injected, consumed = sums["injected_kwh"] or 0.0, sums["consumed_kwh"] or 0.0
    return {
        "rows": queryset.count(),
        "vehicles": queryset.values("vehicle_id").distinct().count(),
        "injected_kwh": injected,
        "consumed_kwh": consumed,
        "co2_avoided_g": sums["co2_avoided_g"] or 0.0,
        "energy_ratio": domain.energy_ratio(injected, consumed),
    }


def exposed_rows(since: dt.date):
    """(vehicle id, day, injected, co2, ratio) of the days from ``since``, for the gauges."""
    return (
        VehicleDayKpi.objects.filter(day__gte=since)
        .order_by("day", "vehicle_id")
        .values_list("vehicle_id", "day", "injected_kwh", "co2_avoided_g", "energy_ratio")
    )
