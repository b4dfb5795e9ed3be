"""The shapes of GET /api/vehicles/{id}/kpis (documentation; the view returns plain data)."""

from __future__ import annotations

from rest_framework import serializers


class KpiFigures(serializers.Serializer):
    injected_kwh = serializers.FloatField(help_text="Energy delivered to the grid, kWh (positive power).")
    consumed_kwh = serializers.FloatField(help_text="Energy absorbed from the grid, kWh (negative power).")
    co2_avoided_g = serializers.FloatField(help_text="CO2 avoided, grams.")
    energy_ratio = serializers.FloatField(
        allow_null=True, help_text="Injected / consumed; null when nothing was consumed."
    )


class KpiDaySerializer(KpiFigures):
    day = serializers.DateField(help_text="Local day (scheduler.time_zone).")
    measured_share = serializers.FloatField(
        help_text="Share (0-1) of injected + consumed measured by telemetry; the rest is from the commands."
    )
    computed_at = serializers.DateTimeField(help_text="When the day was last recomputed.")


class KpiTotalsSerializer(KpiFigures):
    days = serializers.IntegerField(help_text="Days with a row (days without energy have none).")


class VehicleKpisSerializer(serializers.Serializer):
    vehicle_id = serializers.CharField()
    start = serializers.DateField(help_text="First day of the range.")
    end = serializers.DateField(help_text="Last day of the range (inclusive).")
    days = KpiDaySerializer(many=True, help_text="One row per day with energy, in day order.")
    totals = KpiTotalsSerializer(
        help_text="Sums over the rows; their ratio is null when nothing was consumed."
    )
