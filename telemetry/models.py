"""Vehicle state: the latest per vehicle, its history, and pull rounds.

``soc`` is a fraction 0-1; ``power_kw`` follows SPEC §2 (positive = to the grid).
"""

from __future__ import annotations

import uuid
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
    departure_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The next departure the vehicle reported with this state (it overrides the "
        "registry's planned departure for dispatch); empty when it reported none.",
    )

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


class StateSource(models.TextChoices):
    PUSH = "push", "push"
    PULL = "pull", "pull"
    DISCOVERY = "discovery", "discovery"


class VehicleStateHistory(models.Model):
    """Every state a vehicle reported, append-only, purged after
    ``telemetry.retention_days``. One row per (vehicle, reported_at): a QoS 1
    redelivery or the same state seen twice is stored once."""

    id = models.BigAutoField(primary_key=True)
    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="state_history")
    soc = models.FloatField()
    plugged_in = models.BooleanField()
    power_kw = models.FloatField()
    reported_at = models.DateTimeField(help_text="The vehicle's own timestamp of this state.")
    received_at = models.DateTimeField(help_text="When the platform received it (the purge goes by this).")
    source = models.CharField(max_length=12, choices=StateSource.choices)
    poll = models.ForeignKey(
        "TelemetryPoll",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="answers",
        help_text="The pull round this state answered (its request_id), if any.",
    )

    class Meta:
        verbose_name_plural = "vehicle state history"
        constraints = [
            # Also the index of per-vehicle time queries (vehicle = ..., reported_at range).
            models.UniqueConstraint(fields=["vehicle", "reported_at"], name="state_history_unique_report"),
        ]
        indexes = [
            # The retention purge; by received_at because a vehicle clock far in
            # the future would otherwise keep its rows forever.
            models.Index(fields=["received_at"], name="state_history_received"),
        ]

    def __str__(self) -> str:
        return f"{self.vehicle_id} @ {self.reported_at:%Y-%m-%d %H:%M:%S}: soc={self.soc}"


class PollStatus(models.TextChoices):
    COLLECTING = "collecting", "collecting"
    FINISHED = "finished", "finished"
    FAILED = "failed", "failed (request not published)"


class TelemetryPoll(models.Model):
    """One pull round: a request broadcast, answers gathered until ``deadline_at``.

    Two constraints keep rounds from overlapping whatever the number of Beat
    processes: ``round_at`` (the Beat slot, the time truncated to the interval)
    is unique, and at most one round is ``collecting`` at a time.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, help_text="Sent as request_id.")
    round_at = models.DateTimeField(unique=True, help_text="Beat slot (manual rounds: their start).")
    manual = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=PollStatus.choices, default=PollStatus.COLLECTING)
    started_at = models.DateTimeField()
    deadline_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    expected = models.PositiveIntegerField(default=0, help_text="Active vehicles when the round started.")
    answered = models.PositiveIntegerField(default=0)
    timed_out = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"],
                condition=models.Q(status="collecting"),
                name="telemetry_one_open_poll",
            ),
        ]

    def __str__(self) -> str:
        return f"poll {self.started_at:%Y-%m-%d %H:%M:%S} ({self.status})"


class TelemetryPollMiss(models.Model):
    """A vehicle that did not answer a pull round (one row per vehicle and round):
    rows, not a JSON list, so "which vehicles keep missing" is one indexed query."""

    poll = models.ForeignKey(TelemetryPoll, on_delete=models.CASCADE, related_name="misses")
    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="poll_misses")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["poll", "vehicle"], name="poll_miss_unique"),
        ]
        indexes = [models.Index(fields=["vehicle", "poll"], name="poll_miss_vehicle")]

    def __str__(self) -> str:
        return f"{self.vehicle_id} missed {self.poll_id}"


class PlugProfile(models.Model):
    """A vehicle's learned plug-in pattern (``telemetry.prediction.PlugProfile``):
    the probability of being plugged in per day kind (weekday, weekend) and
    local quarter-hour, relearned from the history by a Beat job so that the
    status endpoint and dispatch read 192 bytes per vehicle instead of weeks
    of history."""

    vehicle = models.OneToOneField(
        Vehicle, on_delete=models.CASCADE, primary_key=True, related_name="plug_profile"
    )
    tz_key = models.CharField(max_length=64, help_text="Time zone of the local quarter-hours.")
    prob = models.BinaryField(help_text="2 x 96 probabilities, quantised to 1/255 (uint8).")
    covered_s = models.FloatField(help_text="Seconds of observed history it rests on.")
    learned_at = models.DateTimeField(help_text="The history up to this time was used.")

    def __str__(self) -> str:
        days = self.covered_s / 86400
        return f"{self.vehicle_id}: {days:.1f} days, learned at {self.learned_at:%Y-%m-%d %H:%M}"
