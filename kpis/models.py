"""Ecological KPIs per vehicle and local day (SPEC §10), recomputed from the
acknowledged dispatch commands and, where it covers the time, the telemetry;
a recomputation replaces a day's rows."""

from __future__ import annotations

from django.db import models

from fleet.models import Vehicle


class VehicleDayKpi(models.Model):
    """One vehicle's energy and CO2 over one local day (scheduler.time_zone).
    Only vehicles with energy that day have a row."""

    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="day_kpis", db_index=False)
    day = models.DateField(db_index=True, help_text="Local day of scheduler.time_zone.")
    injected_kwh = models.FloatField(help_text="Energy delivered to the grid (positive power), kWh.")
    consumed_kwh = models.FloatField(help_text="Energy absorbed from the grid (negative power), kWh.")
    co2_avoided_g = models.FloatField(help_text="CO2 avoided, grams (see metrics.emission_factor).")
    energy_ratio = models.FloatField(
        null=True, blank=True, help_text="Injected / consumed; null when nothing was consumed."
    )
    measured_share = models.FloatField(
        default=0.0,
        help_text="Share (0-1) of injected + consumed measured by telemetry; the rest is from the commands.",
    )
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["day", "vehicle_id"]
        verbose_name = "vehicle day KPI"
        verbose_name_plural = "vehicle day KPIs"
        constraints = [models.UniqueConstraint(fields=["vehicle", "day"], name="kpi_one_per_vehicle_day")]

    def __str__(self) -> str:
        return f"{self.vehicle_id} {self.day}"
