"""Day-ahead NEBEF plans (SPEC §8): versions of a delivery day's plan, their
approval, and their per-vehicle entries.

A delivery day is a local day of ``time_zone`` (Europe/Paris by default), so
it has 96 quarter-hours, 92 on the spring daylight-saving day and 100 on the
autumn one. Slot ``k`` of a plan starts at ``scheduler.domain.day_slots(day,
time_zone, slot_minutes)[k]``; entries also store that start (aware UTC).

Sign (SPEC §2): positive power = to the grid (discharge), negative = charging.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from fleet.models import Fleet


class PlanStatus(models.TextChoices):
    DRAFT = "draft"  # made by a run, waiting for an operator
    APPROVED = "approved"  # the day's notified plan: exported and executed
    REJECTED = "rejected"  # refused by an operator
    SUPERSEDED = "superseded"  # was approved until another version of the day was


class PlanSource(models.TextChoices):
    BEAT = "beat"  # the daily D+1 job
    COMMAND = "command"  # manage.py plan_day
    ADMIN = "admin"


class Plan(models.Model):
    """One version of a delivery day's plan. A new run makes a new version (never
    an overwrite), unless its inputs are those of an existing version of the day
    (same ``inputs_digest``): then that version is the answer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    day = models.DateField(help_text="Delivery day, a local date of time_zone.")
    version = models.PositiveIntegerField(help_text="1, 2, ... per day, in the order the runs finished.")
    fleet = models.ForeignKey(
        Fleet,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="plans",
        help_text="The fleet planned; empty = every fleet.",
    )
    status = models.CharField(max_length=16, choices=PlanStatus.choices, default=PlanStatus.DRAFT)
    source = models.CharField(max_length=16, choices=PlanSource.choices, default=PlanSource.COMMAND)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When it was approved or rejected.")
    inputs_digest = models.CharField(
        max_length=64, help_text="SHA-256 of the canonical planner input: the same inputs, the same plan."
    )
    time_zone = models.CharField(max_length=64)
    slot_minutes = models.PositiveSmallIntegerField()
    slot_count = models.PositiveSmallIntegerField(
        help_text="92, 96 or 100 quarter-hours (fewer longer slots)."
    )
    target_kw = models.JSONField(help_text="Target per slot, kW (+ = to the grid).")
    planned_kw = models.JSONField(help_text="Planned net power per slot, kW.")
    shortfall_kw = models.JSONField(help_text="Target not covered per slot, kW.")
    target_kwh = models.FloatField(default=0.0)
    planned_kwh = models.FloatField(default=0.0)
    shortfall_kwh = models.FloatField(default=0.0)
    vehicle_count = models.PositiveIntegerField(default=0, help_text="Vehicles given to the planner.")
    entry_count = models.PositiveIntegerField(default=0)
    excluded = models.JSONField(
        default=dict, blank=True, help_text="vehicle id -> why it was not given to the planner"
    )
    messages = models.JSONField(
        default=list, blank=True, help_text="The planner's notes: departure targets it could not reach..."
    )
    solver_status = models.CharField(max_length=64, blank=True)
    objective = models.FloatField(null=True, blank=True)
    gap = models.FloatField(null=True, blank=True, help_text="Relative optimality gap (0 = proven optimal).")
    solve_s = models.FloatField(null=True, blank=True, help_text="Planner run time, seconds.")

    class Meta:
        ordering = ["-day", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["day", "version"], name="plan_unique_version"),
            models.UniqueConstraint(fields=["day", "inputs_digest"], name="plan_unique_inputs"),
            # The day's notified plan: exactly what is exported and executed.
            models.UniqueConstraint(
                fields=["day"], condition=Q(status="approved"), name="plan_one_approved_per_day"
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="plan_version_positive"),
        ]

    def __str__(self) -> str:
        return f"plan {self.day} v{self.version} ({self.status})"


class PlanEntry(models.Model):
    """One vehicle's power in one slot of a plan (zero entries are not stored).

    ``vehicle_id`` is the registry id, not a foreign key: a plan is a record of
    what was planned and notified, which deleting a vehicle must not change.
    """

    id = models.BigAutoField(primary_key=True)
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="entries", db_index=False)
    vehicle_id = models.CharField(max_length=64)
    slot = models.PositiveSmallIntegerField(help_text="Slot index in the delivery day, from 0.")
    timeslot = models.DateTimeField(help_text="Slot start (aware UTC).")
    power_kw = models.FloatField(help_text="Signed: + = to the grid (discharge), - = charging.")

    class Meta:
        ordering = ["plan", "slot", "vehicle_id"]
        verbose_name_plural = "plan entries"
        constraints = [
            # Also the index of exports (a plan in slot, vehicle order) and of
            # execution (one slot of a plan).
            models.UniqueConstraint(fields=["plan", "slot", "vehicle_id"], name="plan_entry_unique"),
        ]
        indexes = [models.Index(fields=["timeslot", "plan"], name="plan_entry_timeslot")]

    def __str__(self) -> str:
        return f"{self.vehicle_id} slot {self.slot} {self.power_kw:+.3f} kW"
