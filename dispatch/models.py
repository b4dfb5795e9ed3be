"""Signals, dispatch rounds, per-vehicle commands and the dispatch log (SPEC §4, §9).

Sign (SPEC §2): positive power = energy delivered to the grid (discharge),
negative = absorbed (charging). Every id that crosses a process boundary
(signal, dispatch, command) is a UUID.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from fleet.models import Fleet, Vehicle


class SignalType(models.TextChoices):
    FCR = "FCR"
    AFRR = "aFRR"
    MFRR = "mFRR"
    MA = "MA"
    NEBEF = "NEBEF"
    ECOWATT = "EcoWatt"


class SignalSource(models.TextChoices):
    API = "api"
    CLI = "cli"
    ADMIN = "admin"
    GENERATOR = "generator"
    RTE = "rte"
    PLAN = "plan"


class FlexibilitySignal(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    signal_type = models.CharField(max_length=16, choices=SignalType.choices)
    power_kw = models.FloatField(help_text="Signed: positive = to the grid (discharge), negative = charging.")
    start_at = models.DateTimeField()
    duration_s = models.FloatField()
    valid_until = models.DateTimeField(help_text="Setpoints expire then; defaults to start + duration.")
    source = models.CharField(max_length=16, choices=SignalSource.choices, default=SignalSource.API)
    fleet = models.ForeignKey(Fleet, on_delete=models.PROTECT, null=True, blank=True, related_name="signals")
    external_id = models.CharField(
        max_length=128,
        blank=True,
        help_text="The sender's id (RTE order, generator sequence): submissions dedupe on it.",
    )
    setpoints_kw = models.JSONField(
        null=True,
        blank=True,
        help_text="Planned setpoints, vehicle id -> signed kW (a day-ahead plan's slot): dispatched "
        "as given (strategy 'planned') instead of allocated by a strategy; empty = allocate.",
    )
    vehicle_ids = models.JSONField(
        null=True,
        blank=True,
        help_text="Only these vehicles may take part, in every round (an operator's selection in the "
        "admin); empty = any eligible vehicle (of the fleet, if one is named).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(duration_s__gt=0), name="signal_duration_positive"),
            models.UniqueConstraint(
                fields=["source", "external_id"],
                condition=~Q(external_id=""),
                name="signal_unique_external_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.signal_type} {self.power_kw:+.1f} kW @ {self.start_at:%Y-%m-%d %H:%M:%S}"


class DispatchStatus(models.TextChoices):
    PENDING = "pending"  # allocation not done yet
    COLLECTING = "collecting"  # commands out, waiting for acks
    COMPLETED = "completed"  # everything acknowledged
    PARTIAL = "partial"  # some power not acknowledged
    FAILED = "failed"  # nothing acknowledged
    NO_VEHICLES = "no_vehicles"  # nobody eligible
    ZERO_POWER = "zero_power"  # nothing to do, nothing sent


FINAL_DISPATCH = (
    DispatchStatus.COMPLETED,
    DispatchStatus.PARTIAL,
    DispatchStatus.FAILED,
    DispatchStatus.NO_VEHICLES,
    DispatchStatus.ZERO_POWER,
)


class Dispatch(models.Model):
    """One allocation round of a signal: round 0, then fallback rounds 1, 2, ..."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    signal = models.ForeignKey(FlexibilitySignal, on_delete=models.CASCADE, related_name="dispatches")
    round = models.PositiveSmallIntegerField(default=0)
    strategy = models.CharField(max_length=32, blank=True)
    target_kw = models.FloatField(help_text="Power this round must place (signed).")
    allocated_kw = models.FloatField(default=0.0)
    acknowledged_kw = models.FloatField(default=0.0)
    status = models.CharField(
        max_length=16, choices=DispatchStatus.choices, default=DispatchStatus.PENDING, db_index=True
    )
    excluded = models.JSONField(default=dict, blank=True, help_text="vehicle id -> why it was not selected")
    deadline_at = models.DateTimeField(null=True, blank=True, help_text="Acks are awaited until then.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "dispatches"
        constraints = [
            models.UniqueConstraint(fields=["signal", "round"], name="dispatch_one_per_round"),
        ]

    def __str__(self) -> str:
        return f"{self.signal_id} round {self.round} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_DISPATCH


class CommandStatus(models.TextChoices):
    PENDING = "pending"
    PUBLISHED = "published"
    ACKED = "acked"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    FAILED = "failed"  # could not be published (retries exhausted, or expired first)


OPEN_COMMAND = (CommandStatus.PENDING, CommandStatus.PUBLISHED)


class Command(models.Model):
    """One setpoint for one vehicle in one dispatch round."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False, help_text="command_id")
    # No separate FK indexes: (dispatch, vehicle) and (vehicle, valid_until) lead with them.
    dispatch = models.ForeignKey(Dispatch, on_delete=models.CASCADE, related_name="commands", db_index=False)
    vehicle = models.ForeignKey(Vehicle, on_delete=models.CASCADE, related_name="commands", db_index=False)
    power_kw = models.FloatField(help_text="Absolute setpoint sent to the vehicle (signed).")
    allocated_kw = models.FloatField(help_text="This round's share of its target carried by the command.")
    score = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=CommandStatus.choices, default=CommandStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    valid_until = models.DateTimeField()
    published_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    latency_s = models.FloatField(null=True, blank=True, help_text="Publish to ack, seconds.")
    reason = models.CharField(max_length=200, blank=True)
    publish_batch = models.PositiveIntegerField(
        default=0, help_text="Commands of a dispatch are published in batches; a task names its batch."
    )
    late_ack_at = models.DateTimeField(null=True, blank=True, help_text="An ack that came after the timeout.")

    class Meta:
        ordering = ["vehicle_id"]
        constraints = [
            models.UniqueConstraint(fields=["dispatch", "vehicle"], name="command_one_per_vehicle_per_round"),
        ]
        # No index on status, published_at or acked_at: a command's status changes
        # three times in seconds, and with none of them indexed (and fillfactor
        # 70 on PostgreSQL, see migration 0003) those updates stay HOT: no index
        # is rewritten. Queries by status go through the dispatch first.
        indexes = [
            models.Index(fields=["valid_until"], name="command_in_force"),
            models.Index(fields=["vehicle", "valid_until"], name="command_vehicle_in_force"),
            models.Index(fields=["dispatch", "publish_batch"], name="command_batch"),
        ]

    def __str__(self) -> str:
        return f"{self.vehicle_id} {self.power_kw:+.2f} kW ({self.status})"


class DispatchLogEntry(models.Model):
    """The durable dispatch log (SPEC §9): one record per vehicle per dispatch round,
    written when the round is final. Idempotent by command id."""

    at = models.DateTimeField()
    command_id = models.UUIDField(unique=True)
    dispatch_id = models.UUIDField()
    signal_id = models.UUIDField()
    signal_type = models.CharField(max_length=16)
    target_kw = models.FloatField()
    vehicle_id = models.CharField(max_length=64)
    allocated_kw = models.FloatField()
    setpoint_kw = models.FloatField()
    status = models.CharField(max_length=16)
    acknowledged = models.BooleanField()
    ack_latency_s = models.FloatField(null=True)
    fallback_round = models.PositiveSmallIntegerField()
    score = models.FloatField(null=True)

    class Meta:
        ordering = ["-at"]
        verbose_name_plural = "dispatch log"
        # One per filter of GET /api/dispatch/logs, each ending in the API's
        # order (at, id): a page is one index range scan, no sort, at any depth
        # (the cursor holds (at, id); a round logs all its vehicles at one time).
        indexes = [
            models.Index(fields=["at", "id"], name="dlog_at_id"),
            models.Index(fields=["vehicle_id", "at", "id"], name="dlog_vehicle_at_id"),
            models.Index(fields=["signal_type", "at", "id"], name="dlog_type_at_id"),
            models.Index(fields=["dispatch_id", "at", "id"], name="dlog_dispatch_at_id"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.vehicle_id} {self.status}"


# --- RTE connector (issue 10) ----------------------------------------------------


class RteActivationStatus(models.TextChoices):
    PENDING = "pending"  # stored, not submitted yet (a crash here is resumed at the next poll)
    SUBMITTED = "submitted"  # a signal exists for it
    EXPIRED = "expired"  # already over when the connector could submit it
    REJECTED = "rejected"  # not a valid activation, or refused by signal_submit (reason says why)


class RteActivation(models.Model):
    """Every activation the connector received from RTE, once (unique RTE id).

    Stored before the poll cursor moves on and before the signal is submitted,
    so a crash or a restart never loses one: a pending row is submitted at the
    next poll, and ``signal_submit`` de-duplicates on the same id.
    """

    activation_id = models.CharField(max_length=128, unique=True)
    payload = models.JSONField(help_text="The item exactly as RTE's API sent it.")
    status = models.CharField(
        max_length=16, choices=RteActivationStatus.choices, default=RteActivationStatus.PENDING, db_index=True
    )
    reason = models.TextField(blank=True, help_text="Why it was rejected or expired.")
    signal = models.OneToOneField(
        FlexibilitySignal, on_delete=models.SET_NULL, null=True, blank=True, related_name="rte_activation"
    )
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    handled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.activation_id} ({self.status})"


class RteConnectorState(models.Model):
    """The connector's progress (one row per API URL): where the next poll starts."""

    api_url = models.CharField(max_length=500, unique=True)
    polled_until = models.DateTimeField(
        null=True, blank=True, help_text="End of the last successful poll's publication window."
    )
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"RTE connector {self.api_url}"


class GeneratorState(models.Model):
    """Progress of the Beat-driven signal generator (``rteGenerator.runner: beat``).

    One row per scenario run (scenario, seed, fleet): the sequence restarts
    from ``started_at`` deterministically, so ``planned`` is all that is needed
    to pick up exactly where the previous tick stopped.
    """

    key = models.CharField(max_length=200, unique=True, help_text="scenario:seed:fleet")
    started_at = models.DateTimeField(help_text="Time origin of the scenario's sequence.")
    planned = models.PositiveIntegerField(default=0, help_text="Signals of the sequence handled so far.")
    planned_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"generator {self.key} from {self.started_at:%Y-%m-%d %H:%M:%S}"
