"""Vehicle state as last reported (push over MQTT; pull and history build on it).

``soc`` is a fraction 0-1; ``power_kw`` follows SPEC §2 (positive = to the grid).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models

from fleet.models import Vehicle


class VehicleState(models.Model):
    """The latest known state of one vehicle (one row per vehicle, upserted)."""

    vehicle = models.OneToOneField(Vehicle, on_delete=models.CASCADE, primary_key=True, related_name="state")
    soc = models.FloatField(null=True, blank=True)
    plugged_in = models.BooleanField(default=False)
    power_kw = models.FloatField(default=0.0)
    online = models.BooleanField(default=True, help_text="False after the vehicle's Last Will.")
    reported_at = models.DateTimeField(help_text="The vehicle's own timestamp of this state.")
    received_at = models.DateTimeField(db_index=True, help_text="When the platform last heard from it.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(soc__isnull=True) | models.Q(soc__gte=0, soc__lte=1),
                name="state_soc_fraction",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.vehicle_id}: soc={self.soc} plugged={self.plugged_in}"

    def is_available(self, now: datetime, stale_after_s: float) -> bool:
        return self.online and self.plugged_in and self.received_at >= now - timedelta(seconds=stale_after_s)
