"""Dispatch: from an accepted signal to acknowledged power (SPEC §4).

Flow: ``signal_submit`` stores the signal and its round-0 dispatch and, after
commit, enqueues ``dispatch_allocate``; that selects vehicles (pure domain
code), stores one command per vehicle and enqueues the publishes in batches
plus one ack collector. The bridge records acks in batches (``acks_record``).
The collector finalises the round at the last ack or at the deadline, writes
the dispatch log and opens a fallback round for the power not acknowledged.

Every step is idempotent: state transitions are conditional updates, rounds
and commands are unique, and the dispatch log is unique per command.
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from paho.mqtt.enums import MQTTErrorCode

from dispatch import codec, domain
from dispatch.log import dispatch_log_write
from dispatch.metrics import (
    ACK_RATE,
    ACKS,
    DISPATCH_LATENCY,
    PUBLISH_FAILURE,
    PUBLISH_SUCCESS,
    VEHICLES_DISPATCHED,
)
from dispatch.models import (
    OPEN_COMMAND,
    Command,
    CommandStatus,
    Dispatch,
    DispatchStatus,
    FlexibilitySignal,
    SignalSource,
    SignalType,
)
from fleet.models import Fleet, Vehicle
from telemetry import prediction
from telemetry import services as telemetry_services
from v2g_project import mqtt
from v2g_project.bridge import Message
from v2g_project.config import DispatchConfig
from v2g_project.logcontext import log_bind, log_context
from v2g_project.payloads import PayloadError, vehicle_from_topic

log = logging.getLogger(__name__)

PUBLISH_BATCH = 500  # commands per publish task: one broker round trip per batch, not per vehicle
COLLECT_POLL_S = 0.25
POWER_EPSILON_KW = 0.01
MAX_SIGNAL_DURATION_S = 7 * 24 * 3600


class SignalRejected(ValueError):
    """An invalid signal; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- submission ----------------------------------------------------------------


def signal_submit(**kwargs) -> tuple[FlexibilitySignal, Dispatch]:
    """Store a signal and its first dispatch round; allocation runs after commit.
    The keyword arguments are :func:`signal_submit_once`'s."""
    signal, dispatch, _created = signal_submit_once(**kwargs)
    return signal, dispatch


def signal_submit_once(
    *,
    signal_type: str,
    power_kw: float,
    duration_s: float,
    start_at: datetime | None = None,
    valid_until: datetime | None = None,
    source: str = SignalSource.API,
    fleet_id: str | None = None,
    external_id: str = "",
    setpoints_kw: Mapping[str, float] | None = None,
    vehicle_ids: Collection[str] | None = None,
) -> tuple[FlexibilitySignal, Dispatch, bool]:
    """Store a signal and its first dispatch round, as :func:`signal_submit`, and say
    whether this call created the signal
    (False: an earlier submission with the same ``source`` and ``external_id``).

    With ``external_id``, submitting the same signal twice returns the first.
    With ``setpoints_kw`` (vehicle id -> signed kW, e.g. a day-ahead plan's
    slot), the first round sends those setpoints instead of allocating by a
    strategy (see ``domain.allocate_planned``); ``power_kw`` must be their sum.
    With ``vehicle_ids`` (an operator's selection), only those vehicles may take
    part, in the first round as in fallback rounds; each must be registered
    (in ``fleet_id`` when one is named).
    """
    if signal_type not in SignalType.values:
        raise SignalRejected("signal_type", f"unknown {signal_type!r}; one of {', '.join(SignalType.values)}")
    if isinstance(power_kw, bool) or not isinstance(power_kw, int | float) or not math.isfinite(power_kw):
        raise SignalRejected("power_kw", "must be a finite number of kW (positive = to the grid)")
    if (
        isinstance(duration_s, bool)
        or not isinstance(duration_s, int | float)
        or not math.isfinite(duration_s)
    ):
        raise SignalRejected("duration_s", "must be a number of seconds")
    if not 0 < duration_s <= MAX_SIGNAL_DURATION_S:
        raise SignalRejected("duration_s", f"must be above 0 and at most {MAX_SIGNAL_DURATION_S} s")
    now = timezone.now()
    start_at = start_at or now
    for name, value in (("start_at", start_at), ("valid_until", valid_until)):
        if value is not None and timezone.is_naive(value):
            raise SignalRejected(name, "needs a UTC offset (ISO 8601, e.g. 2025-01-31T12:00:00+00:00)")
    try:
        end_at = start_at + timedelta(seconds=duration_s)
    except OverflowError:  # start_at in the last days of year 9999
        raise SignalRejected("start_at", "too late: the signal would end after year 9999") from None
    valid_until = valid_until or end_at
    if valid_until <= now:
        raise SignalRejected("valid_until", "is already past: the setpoints would be stale")
    if valid_until <= start_at:
        raise SignalRejected("valid_until", "must be after start_at")
    if fleet_id is not None and not Fleet.objects.filter(id=fleet_id).exists():
        raise SignalRejected("fleet_id", f"no fleet {fleet_id!r}")
    planned = _planned_setpoints(setpoints_kw, power_kw)
    selected = _selected_vehicles(vehicle_ids, fleet_id)
    if external_id:
        existing = _existing_submission(source, external_id)
        if existing:
            return (*existing, False)
    try:
        with transaction.atomic():
            signal = FlexibilitySignal.objects.create(
                signal_type=signal_type,
                power_kw=float(power_kw),
                start_at=start_at,
                duration_s=float(duration_s),
                valid_until=valid_until,
                source=source,
                fleet_id=fleet_id,
                external_id=external_id,
                setpoints_kw=planned,
                vehicle_ids=selected,
            )
            dispatch = Dispatch.objects.create(signal=signal, round=0, target_kw=float(power_kw))
            _enqueue_allocate(dispatch.id)
    except IntegrityError:
        existing = _existing_submission(source, external_id) if external_id else None
        if existing is None:
            raise
        return (*existing, False)
    log.info(
        "signal %s accepted: %s, dispatch %s", signal.id, signal, dispatch.id,
        extra={"dispatch_id": str(dispatch.id), "signal_type": signal_type},
    )  # fmt: skip
    return signal, dispatch, True


def _planned_setpoints(setpoints_kw: Mapping[str, float] | None, power_kw: float) -> dict[str, float] | None:
    if setpoints_kw is None:
        return None
    if not isinstance(setpoints_kw, Mapping) or not setpoints_kw:
        raise SignalRejected("setpoints_kw", "must map at least one vehicle id to its kW")
    planned: dict[str, float] = {}
    for vehicle_id, kw in setpoints_kw.items():
        if not isinstance(vehicle_id, str) or not vehicle_id:
            raise SignalRejected("setpoints_kw", f"not a vehicle id: {vehicle_id!r}")
        if isinstance(kw, bool) or not isinstance(kw, int | float) or not math.isfinite(kw):
            raise SignalRejected("setpoints_kw", f"{vehicle_id}: must be a finite number of kW")
        planned[vehicle_id] = round(float(kw), 3)
    if abs(sum(planned.values()) - power_kw) > POWER_EPSILON_KW:
        raise SignalRejected("power_kw", f"must be the sum of setpoints_kw, {sum(planned.values()):.3f}")
    return planned


MAX_SELECTED_VEHICLES = 10_000


def _selected_vehicles(vehicle_ids: Collection[str] | None, fleet_id: str | None) -> list[str] | None:
    if vehicle_ids is None:
        return None
    if isinstance(vehicle_ids, str) or not isinstance(vehicle_ids, Collection):
        raise SignalRejected("vehicle_ids", "must be a list of vehicle ids")
    selected = sorted(set(vehicle_ids))
    if not selected:
        raise SignalRejected("vehicle_ids", "must name at least one vehicle")
    if len(selected) > MAX_SELECTED_VEHICLES:
        raise SignalRejected("vehicle_ids", f"at most {MAX_SELECTED_VEHICLES} vehicles")
    if not all(isinstance(v, str) and v for v in selected):
        raise SignalRejected("vehicle_ids", "must be a list of vehicle ids")
    known = Vehicle.objects.filter(id__in=selected)
    if fleet_id is not None:
        known = known.filter(fleet_id=fleet_id)
    unknown = set(selected) - set(known.values_list("id", flat=True))
    if unknown:
        where = f" in fleet {fleet_id!r}" if fleet_id is not None else ""
        raise SignalRejected("vehicle_ids", f"no vehicle {', '.join(sorted(unknown)[:5])}{where}")
    return selected


def _existing_submission(source: str, external_id: str) -> tuple[FlexibilitySignal, Dispatch] | None:
    signal = FlexibilitySignal.objects.filter(source=source, external_id=external_id).first()
    if signal is None:
        return None
    return signal, signal.dispatches.get(round=0)


def _enqueue_allocate(dispatch_id: uuid.UUID) -> None:
    from dispatch.tasks import dispatch_allocate_task

    transaction.on_commit(lambda: dispatch_allocate_task.delay(str(dispatch_id)))


# --- allocation ------------------------------------------------------------------


def policy_from_config(cfg: DispatchConfig) -> domain.Policy:
    def weights(w) -> domain.SmartWeights:
        return domain.SmartWeights(soc=w.soc, availability=w.availability, fairness=w.fairness)

    return domain.Policy(
        enable_soc_constraints=cfg.enable_soc_constraints,
        min_soc=cfg.min_soc,
        safe_discharge_floor=cfg.safe_discharge_floor,
        default_strategy=cfg.default_strategy,
        strategies=dict(cfg.strategies),
        lp_first=frozenset(cfg.lp_first),
        smart_weights=weights(cfg.smart_weights),
        segments={
            name: domain.SegmentPolicy(
                strategy=segment.strategy, weights=weights(segment.weights) if segment.weights else None
            )
            for name, segment in cfg.segments.items()
        },
        fallback=cfg.fallback,
        balanced_min_soc=cfg.safe_discharge_floor,
    )


VEHICLE_COLUMNS = (
    *("id", "segment", "is_v2g", "active", "battery_kwh", "max_charge_kw", "max_discharge_kw"),
    *("min_soc", "target_soc", "priority", "state__soc", "available"),
    # For the availability forecast and the departure SoC floor: the departure the vehicle
    # reported with its latest state, else the registry's planned one.
    *("state__plugged_in", "state__reported_at", "departs_at"),
)


def vehicle_states(
    signal: FlexibilitySignal, now: datetime, *, with_history: bool = True
) -> list[domain.VehicleState]:
    """The fleet as the allocator sees it: registry + latest state + commitments.

    ``with_history`` adds participation and ack rate over the last day and
    the forecast share of the signal each vehicle stays plugged in (for smart,
    lp and probabilistic); equal split needs none of them.
    """
    stale_before = now - timedelta(seconds=settings.V2G.telemetry.stale_after_seconds)
    vehicles = Vehicle.objects.active()
    if signal.fleet_id:
        vehicles = vehicles.filter(fleet_id=signal.fleet_id)
    if signal.vehicle_ids is not None:
        vehicles = vehicles.filter(id__in=signal.vehicle_ids)
    # Availability is computed by the database: no per-vehicle datetime to load.
    rows = vehicles.annotate(
        departs_at=Coalesce("state__departure_at", "departure_at"),
        available=ExpressionWrapper(
            Q(state__plugged_in=True, state__online=True, state__received_at__gte=stale_before),
            output_field=BooleanField(),
        ),
    ).values_list(*VEHICLE_COLUMNS)
    if with_history:
        rows = list(rows)
    # Commitments and history of these vehicles only: the commands of every other
    # fleet in force (50,000 of them after a big round elsewhere) are not this
    # round's business, and loading them made a 1,000-vehicle round cost as much
    # as the whole platform's commands.
    commands = Command.objects.all()
    if signal.fleet_id or signal.vehicle_ids is not None:
        commands = commands.filter(vehicle_id__in=vehicles.values("id"))
    committed = set(
        commands.filter(valid_until__gt=now, status__in=(*OPEN_COMMAND, CommandStatus.ACKED))
        .exclude(dispatch__signal_id=signal.id)
        .values_list("vehicle_id", flat=True)
    )
    history: dict[str, tuple[int, int]] = {}
    if with_history:
        history = {
            vehicle_id: (total, acked)
            for vehicle_id, total, acked in commands.filter(valid_until__gte=now - timedelta(days=1))
            .values("vehicle_id")
            .annotate(total=Count("id"), acked=Count("id", filter=Q(status=CommandStatus.ACKED)))
            .values_list("vehicle_id", "total", "acked")
        }
    plugged_share = _plugged_share(rows, signal, now) if with_history else {}
    states = []
    for (
        vid,
        segment,
        is_v2g,
        active,
        battery,
        charge,
        discharge,
        min_soc,
        target,
        priority,
        soc,
        available,
        _plugged_in,
        _reported_at,
        departs_at,
    ) in rows:
        total, acked = history.get(vid, (0, 0))
        # A departure already past is stale information (the vehicle is still here): ignored.
        hours_left = (
            (departs_at - signal.valid_until).total_seconds() / 3600
            if departs_at and departs_at > now
            else None
        )
        states.append(
            domain.VehicleState(
                vehicle_id=vid,
                segment=segment,
                is_v2g=is_v2g,
                active=active,
                available=bool(available),
                soc=soc,
                battery_kwh=battery,
                max_charge_kw=charge,
                max_discharge_kw=discharge,
                min_soc=min_soc,
                target_soc=target,
                departure_floor=domain.departure_floor(
                    target_soc=target,
                    max_charge_kw=charge,
                    battery_kwh=battery,
                    hours_to_departure=hours_left,
                ),
                priority=priority,
                committed=vid in committed,
                participation=float(total),
                ack_rate=acked / total if total else 1.0,
                availability=plugged_share.get(vid, 1.0),
            )
        )
    return states


def _plugged_share(rows: list[tuple], signal: FlexibilitySignal, now: datetime) -> dict[str, float]:
    """Availability forecast for scoring: the share of the signal's remaining
    span each available vehicle is forecast to stay plugged in, from the
    prediction engine (its learned plug-in profile, its planned departure).
    Unavailable vehicles are not scored and get no entry."""
    start = max(now, signal.start_at)
    end = _signal_end(signal)
    span = max((end - start).total_seconds(), 1.0)
    facts = [
        prediction.VehicleFacts(
            vehicle_id=r[0], battery_kwh=r[4], max_charge_kw=r[5], max_discharge_kw=r[6], min_soc=r[7],
            target_soc=r[8], departure_at=r[14], latest=prediction.Sample(r[13], r[10], r[12], 0.0),
        )
        for r in rows
        if r[11]  # available: plugged in, online, fresh, so it has a latest state
    ]  # fmt: skip
    if not facts:
        return {}
    engine = telemetry_services.prediction_engine()
    profiles = (
        telemetry_services.plug_profiles(f.vehicle_id for f in facts)
        if isinstance(engine, prediction.HistoryEngine)
        else {}
    )
    forecasts = engine.forecast_many(facts, [profiles.get(f.vehicle_id) for f in facts], start, ())
    share = {}
    for f, forecast in zip(facts, forecasts, strict=True):
        window = forecast.plugin_window
        stays = 0.0 if window is None else (min(window[1], end) - max(window[0], start)).total_seconds()
        share[f.vehicle_id] = min(1.0, max(0.0, stays / span))
    return share


def _needs_history(policy: domain.Policy, signal_type: str, round_: int) -> bool:
    """Whether any strategy that may run uses participation or ack rates."""
    if round_ > 0:
        return policy.fallback == "probabilistic"
    if signal_type in policy.lp_first:
        return True
    strategies = {policy.strategies.get(signal_type, policy.default_strategy)}
    strategies |= {segment.strategy for segment in policy.segments.values() if segment.strategy}
    return strategies != {"equal"}


def _signal_end(signal: FlexibilitySignal) -> datetime:
    return min(signal.start_at + timedelta(seconds=signal.duration_s), signal.valid_until)


def acked_setpoints(signal_id: uuid.UUID) -> dict[str, float]:
    """Vehicle -> the setpoint it acknowledged last in this signal (later rounds supersede)."""
    held: dict[str, float] = {}
    for vehicle_id, power_kw in (
        Command.objects.filter(dispatch__signal_id=signal_id, status=CommandStatus.ACKED)
        .order_by("dispatch__round")
        .values_list("vehicle_id", "power_kw")
    ):
        held[vehicle_id] = power_kw
    return held


ALLOCATION_LOCK_KEY = 0x7632_6701  # "v2g" allocation, a PostgreSQL advisory lock id


def _allocation_lock() -> None:
    """Serialise allocations: two signals allocated at once by two workers would
    each see the other's vehicles as free. Held until the transaction ends.
    SQLite needs nothing: its IMMEDIATE transactions already run one at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ALLOCATION_LOCK_KEY])


def dispatch_allocate(dispatch_id: str | uuid.UUID) -> str:
    """Select vehicles and store their commands; publishes are enqueued after commit."""
    cfg = settings.V2G
    with transaction.atomic():
        _allocation_lock()
        dispatch = (
            Dispatch.objects.select_for_update()
            .select_related("signal")
            .filter(id=dispatch_id, status=DispatchStatus.PENDING)
            .first()
        )
        if dispatch is None:
            return "skipped"  # already allocated (a duplicate task run) or gone
        signal = dispatch.signal
        log_bind(signal_type=signal.signal_type)
        now = timezone.now()
        end = _signal_end(signal)
        planned = signal.setpoints_kw if dispatch.round == 0 else None
        if dispatch.target_kw == 0 and not planned:
            return _close_empty(dispatch, DispatchStatus.ZERO_POWER, now, "zero power: nothing sent")
        if end <= now:
            return _close_empty(dispatch, DispatchStatus.FAILED, now, "signal ended before allocation")
        spec = domain.SignalSpec(
            signal_type=signal.signal_type,
            power_kw=dispatch.target_kw,
            duration_s=max(1.0, (end - max(now, signal.start_at)).total_seconds()),
            vehicle_ids=frozenset(signal.vehicle_ids) if signal.vehicle_ids is not None else None,
        )
        policy = policy_from_config(cfg.dispatch)
        states = vehicle_states(
            signal,
            now,
            with_history=not planned and _needs_history(policy, signal.signal_type, dispatch.round),
        )
        already = acked_setpoints(signal.id) if dispatch.round else {}
        if planned:
            allocation = domain.allocate_planned(spec, states, policy, planned)
        elif dispatch.round == 0:
            allocation = domain.allocate(spec, states, policy)
        else:
            rng = random.Random(dispatch.id.int)  # deterministic per round, different across rounds
            # A vehicle whose command was never sent (its worker died, the setpoint
            # expired in the queue) did not fail: it stays a candidate.
            failed = set(
                Command.objects.filter(dispatch__signal_id=signal.id, published_at__isnull=False)
                .exclude(status=CommandStatus.ACKED)
                .values_list("vehicle_id", flat=True)
            ) - set(already)
            allocation = domain.fallback_allocate(
                dispatch.target_kw, spec, already, states, policy, rng=rng, failed=failed
            )
        dispatch.strategy = allocation.strategy
        dispatch.excluded = allocation.excluded
        if not allocation.setpoints_kw:
            outcome = _close_empty(dispatch, DispatchStatus.NO_VEHICLES, now, "no eligible vehicle")
            if planned:
                # None of the planned vehicles can take its setpoint: the others may.
                _fallback_open(dispatch, signal, now)
            return outcome
        count = _commands_insert(dispatch, signal, allocation, already)
        dispatch.allocated_kw = allocation.allocated_kw
        dispatch.status = DispatchStatus.COLLECTING
        dispatch.deadline_at = now + timedelta(seconds=cfg.dispatch.ack_timeout_seconds)
        dispatch.save(update_fields=["strategy", "excluded", "allocated_kw", "status", "deadline_at"])
        transaction.on_commit(lambda: _after_allocation(dispatch, signal, count))
    log.info(
        "dispatch %s round %d: %d vehicle(s), %.1f of %.1f kW allocated (%s), %d excluded",
        dispatch.id, dispatch.round, count, dispatch.allocated_kw, dispatch.target_kw,
        dispatch.strategy, len(dispatch.excluded),
    )  # fmt: skip
    return "allocated"


COMMAND_COLUMNS = (
    *("id", "dispatch_id", "vehicle_id", "power_kw", "allocated_kw"),
    *("score", "status", "attempts", "valid_until", "reason", "publish_batch"),
)


def _commands_insert(
    dispatch: Dispatch, signal: FlexibilitySignal, allocation: domain.Allocation, already: dict[str, float]
) -> int:
    """Store one pending command per setpoint, numbered in publish batches;
    returns how many.

    On PostgreSQL through COPY: building 10,000 model instances and a giant
    INSERT took about a second, COPY of plain tuples a small fraction of it.
    """
    rows = [
        (
            uuid.uuid4(),
            dispatch.id,
            vehicle_id,
            setpoint,
            round(setpoint - already.get(vehicle_id, 0.0), 3),
            allocation.scores.get(vehicle_id),
            CommandStatus.PENDING.value,
            0,
            signal.valid_until,
            "",
            index // PUBLISH_BATCH,
        )
        for index, (vehicle_id, setpoint) in enumerate(allocation.setpoints_kw.items())
    ]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            copy_sql = f"COPY {Command._meta.db_table} ({', '.join(COMMAND_COLUMNS)}) FROM STDIN"
            with cursor.cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
    else:
        Command.objects.bulk_create(
            [Command(**dict(zip(COMMAND_COLUMNS, row, strict=True))) for row in rows], batch_size=2000
        )
    return len(rows)


def _close_empty(dispatch: Dispatch, status: str, now: datetime, why: str) -> str:
    dispatch.status = status
    dispatch.finished_at = now
    dispatch.save(update_fields=["status", "finished_at", "strategy", "excluded"])
    log.info("dispatch %s round %d: %s", dispatch.id, dispatch.round, why)
    return status


def _after_allocation(dispatch: Dispatch, signal: FlexibilitySignal, count: int) -> None:
    from dispatch.tasks import commands_publish_task, dispatch_collect_task

    VEHICLES_DISPATCHED.labels(signal.signal_type).inc(count)
    # Setpoints go stale: a publish still queued after this is dropped by the
    # worker; the collector then fails those commands and fallback takes over.
    stale_s = settings.V2G.dispatch.publish_expires_seconds
    expires = min(signal.valid_until, timezone.now() + timedelta(seconds=stale_s))
    # A task names its batch, not 500 ids: small messages, and 2-parameter queries.
    for batch in range(math.ceil(count / PUBLISH_BATCH)):
        commands_publish_task.apply_async(
            kwargs={"dispatch_id": str(dispatch.id), "batch": batch}, expires=expires
        )
    dispatch_collect_task.apply_async(args=[str(dispatch.id)], countdown=COLLECT_POLL_S)


# --- publishing ------------------------------------------------------------------


@dataclass(frozen=True)
class PublishOutcome:
    published: int
    retrying: list[str]
    failed: int
    expired: int


def commands_publish(
    command_ids: Sequence[str] | None = None,
    attempt: int = 0,
    *,
    dispatch_id: str | None = None,
    batch: int | None = None,
    redelivered: bool = False,
) -> PublishOutcome:
    """Publish commands in one go; report which need a per-vehicle retry.

    The commands are one publish batch of a dispatch (the first attempt) or
    explicit ids (retries, the sweep). They are claimed (pending -> published,
    with ``published_at``) in one locked UPDATE before sending: a duplicate
    task run finds nothing left to claim, and one status write per command is
    saved. ``redelivered`` (the task came back after its worker died) also
    re-sends commands it had claimed and no vehicle acked yet: a vehicle may
    then get a command twice, which its command id makes harmless. A setpoint
    past its ``valid_until`` is never sent, nor a command after its round's
    ack deadline.
    """
    cfg = settings.V2G
    now = timezone.now()
    if dispatch_id is not None:
        scope = Command.objects.filter(dispatch_id=dispatch_id, publish_batch=batch)
    else:
        scope = Command.objects.filter(id__in=command_ids)
    claimable = (CommandStatus.PENDING, CommandStatus.PUBLISHED) if redelivered else (CommandStatus.PENDING,)
    with transaction.atomic():
        expired = scope.filter(status__in=claimable, valid_until__lte=now).update(
            status=CommandStatus.FAILED, reason="setpoint expired before it could be published"
        )
        # Not after the round's ack deadline: the command would time out unheard
        # (a worker died, the queue was long). Left pending, it fails at
        # finalisation and its vehicle stays a candidate for the fallback round.
        open_ = scope.filter(status__in=claimable, valid_until__gt=now, dispatch__deadline_at__gt=now)
        # Only the columns that differ per command: the signal's fields are
        # the same for a whole batch and are read once per dispatch.
        live = list(
            open_.select_for_update(skip_locked=True, of=("self",)).values_list(
                "id", "vehicle_id", "power_kw", "dispatch_id"
            )
        )
        if live:
            # published_at before sending: an ack can arrive before this task ends.
            open_.update(status=CommandStatus.PUBLISHED, published_at=now, attempts=F("attempts") + 1)
    if not live:
        return PublishOutcome(0, [], 0, expired)
    rounds = list(
        Dispatch.objects.filter(id__in={row[3] for row in live}).values_list(
            "id", "signal__signal_type", "signal__start_at", "signal__duration_s", "signal__valid_until"
        )
    )
    if len(rounds) == 1:  # retries name commands, not their dispatch
        log_bind(dispatch_id=rounds[0][0], signal_type=rounds[0][1])
    encoders = {
        dispatch: codec.CommandEncoder(
            dispatch_id=dispatch,
            signal_type=signal_type,
            start_at=start_at,
            duration_s=duration_s,
            valid_until=valid_until,
            issued_at=now,
        )
        for dispatch, signal_type, start_at, duration_s, valid_until in rounds
    }
    sent: list[tuple[tuple, object]] = []
    error = ""
    topic_template, qos = cfg.mqtt.command_topic, cfg.mqtt.qos.command
    try:
        client = mqtt.publisher(cfg.mqtt)
        for row in live:
            command_id, vehicle_id, power_kw, dispatch = row
            payload = encoders[dispatch].encode(command_id, vehicle_id, power_kw)
            sent.append(
                (row, client.publish(codec.command_topic(topic_template, vehicle_id), payload, qos=qos))
            )
    except mqtt.MqttUnavailable as exc:
        error = str(exc)
    # Not waiting for each PUBACK: a PUBACK proves nothing about the vehicle (only
    # its ack does), and waiting for them kept this worker idle for a third of
    # each batch. A message paho accepted while connected is in flight: paho
    # resends it after a reconnect, and if it is lost anyway the vehicle never
    # acks, the command times out and its power goes to fallback.
    ok = [row for row, info in sent if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS]
    failed = [row for row, info in sent if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS]
    attempted = {row[0] for row, _info in sent}
    failed += [row for row in live if row[0] not in attempted]
    PUBLISH_SUCCESS.inc(len(ok))
    retrying, given_up = [], []
    if failed:
        PUBLISH_FAILURE.inc(len(failed))
        log.warning(
            "publish failed for %d command(s) (attempt %d): %s",
            len(failed),
            attempt + 1,
            error or "rejected by paho",
        )
        for row in failed:
            (retrying if attempt < cfg.mqtt.max_retries else given_up).append(str(row[0]))
        # Back to pending for the retry (unless an ack already came).
        Command.objects.filter(id__in=retrying, status=CommandStatus.PUBLISHED).update(
            status=CommandStatus.PENDING
        )
        if given_up:
            why = error or "the MQTT client refused the message"
            Command.objects.filter(id__in=given_up, status=CommandStatus.PUBLISHED).update(
                status=CommandStatus.FAILED,
                reason=f"publish failed after {attempt + 1} attempt(s): {why}"[:200],
            )
    return PublishOutcome(len(ok), retrying, len(given_up), expired)


def publish_retry_delay_s(attempt: int, backoff_ms: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, backoff * 2**attempt)."""
    return (rng or random).uniform(0.5, 1.0) * backoff_ms * (2**attempt) / 1000


# --- acks --------------------------------------------------------------------------


def acks_record(messages: Sequence[Message], topic_filter: str) -> dict[str, int]:
    """Record a batch of acks in one conditional UPDATE.

    Only a command still pending/published for that very vehicle moves to
    acked/rejected, so a QoS 1 redelivery, a duplicate ack or an ack that loses
    the race with the timeout never counts twice. Late acks (after timeout) are
    kept as ``late_ack_at`` and logged, not counted.
    """
    counts: dict[str, int] = defaultdict(int)
    acks: dict[uuid.UUID, tuple[codec.Ack, datetime]] = {}
    for message in messages:
        try:
            ack = codec.ack_decode(message.payload, vehicle_from_topic(message.topic, topic_filter))
        except PayloadError as exc:
            counts["malformed"] += 1
            log.warning("rejected ack on %s: %s", message.topic, exc)
            continue
        if ack.command_id in acks:
            counts["duplicate"] += 1
            continue
        acks[ack.command_id] = (ack, message.received_at)
    if acks:
        transitioned = _acks_apply(acks)
        _acks_explain_rest(acks, transitioned, counts)
        for outcome in ("accepted", "rejected"):
            counts[outcome] += sum(
                1 for cid in transitioned if acks[cid][0].accepted == (outcome == "accepted")
            )
    for outcome, count in counts.items():
        ACKS.labels(outcome).inc(count)
    return dict(counts)


def _acks_apply(acks: dict[uuid.UUID, tuple[codec.Ack, datetime]]) -> set[uuid.UUID]:
    """One UPDATE ... FROM per 1,000 acks, conditional on the command still being
    open for that vehicle; RETURNING says which ones this call moved."""
    pk = Command._meta.pk
    transitioned: set[uuid.UUID] = set()
    items = list(acks.items())
    for start in range(0, len(items), 1000):
        chunk = items[start : start + 1000]
        statuses = [
            (CommandStatus.ACKED if ack.accepted else CommandStatus.REJECTED).value for _, (ack, _t) in chunk
        ]
        if connection.vendor == "postgresql":
            sql, params = _acks_sql_postgresql(chunk, statuses)
        else:
            sql, params = _acks_sql_portable(chunk, statuses)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [*params, CommandStatus.PENDING.value, CommandStatus.PUBLISHED.value])
            returned = cursor.fetchall()
        transitioned.update(pk.to_python(row[0]) for row in returned)
    return transitioned


_ACK_SET = "status = v.status, reason = v.reason, "
_ACK_WHERE = "WHERE c.id = v.id AND c.vehicle_id = v.vehicle_id AND c.status IN (%s, %s) "


def _acks_sql_postgresql(chunk, statuses) -> tuple[str, list]:
    # Five array parameters, not five per ack (psycopg's query conversion grows
    # with placeholders); times as epoch floats, ids as text: cheap to send.
    sql = (
        f"UPDATE {Command._meta.db_table} AS c SET {_ACK_SET}"  # noqa: S608 - our names; values are parameters
        "acked_at = to_timestamp(v.acked_epoch), "
        "latency_s = v.acked_epoch - EXTRACT(EPOCH FROM c.published_at) "
        "FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::float8[], %s::text[]) "
        "AS v(id, vehicle_id, status, acked_epoch, reason) "
        f"{_ACK_WHERE}RETURNING c.id"
    )
    params = [
        [str(command_id) for command_id, _ in chunk],
        [ack.vehicle_id for _, (ack, _t) in chunk],
        statuses,
        [received_at.timestamp() for _, (_a, received_at) in chunk],
        [ack.reason for _, (ack, _t) in chunk],
    ]
    return sql, params


def _acks_sql_portable(chunk, statuses) -> tuple[str, list]:
    # SQLite (3.35+: UPDATE ... FROM and RETURNING, without the alias).
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
    sql = (
        f"UPDATE {Command._meta.db_table} AS c SET {_ACK_SET}"  # noqa: S608 - our names; values are parameters
        "acked_at = v.acked_at, latency_s = (julianday(v.acked_at) - julianday(c.published_at)) * 86400.0 "
        "FROM (SELECT column1 AS id, column2 AS vehicle_id, column3 AS status, column4 AS acked_at, "
        f"column5 AS reason FROM (VALUES {rows})) AS v "
        f"{_ACK_WHERE}RETURNING id"
    )
    pk = Command._meta.pk
    params = []
    for (command_id, (ack, received_at)), status in zip(chunk, statuses, strict=True):
        params += [
            pk.get_db_prep_value(command_id, connection),
            ack.vehicle_id,
            status,
            connection.ops.adapt_datetimefield_value(received_at),
            ack.reason,
        ]
    return sql, params


def _acks_explain_rest(
    acks: dict[uuid.UUID, tuple[codec.Ack, datetime]], transitioned: set[uuid.UUID], counts: dict[str, int]
) -> None:
    rest = set(acks) - transitioned
    if not rest:
        return
    found = {
        row[0]: row
        for row in Command.objects.filter(id__in=rest).values_list(
            "id", "vehicle_id", "status", "dispatch_id"
        )
    }
    late: list[uuid.UUID] = []
    for command_id in rest:
        ack, _received = acks[command_id]
        row = found.get(command_id)
        if row is None:
            counts["unknown"] += 1
            log.warning(
                "ack for unknown command %s from %s ignored", command_id, ack.vehicle_id,
                extra={"vehicle_id": ack.vehicle_id},
            )  # fmt: skip
        elif row[1] != ack.vehicle_id:
            counts["mismatch"] += 1
            log.warning(
                "ack for command %s came from %s, not its vehicle %s: ignored",
                command_id,
                ack.vehicle_id,
                row[1],
                extra={"vehicle_id": ack.vehicle_id, "dispatch_id": str(row[3])},
            )
        elif row[2] in (CommandStatus.TIMED_OUT, CommandStatus.FAILED):
            counts["late"] += 1
            late.append(command_id)
            log.info(
                "late ack for command %s from %s (already %s): not counted",
                command_id,
                ack.vehicle_id,
                row[2],
                extra={"vehicle_id": ack.vehicle_id, "dispatch_id": str(row[3])},
            )
        else:
            counts["duplicate"] += 1
    if late:
        received = {cid: acks[cid][1] for cid in late}
        for command_id in Command.objects.filter(id__in=late, late_ack_at__isnull=True).values_list(
            "id", flat=True
        ):
            Command.objects.filter(id=command_id, late_ack_at__isnull=True).update(
                late_ack_at=received[command_id]
            )


# --- collection, finalisation, fallback -------------------------------------------------


def dispatch_collect(dispatch_id: str | uuid.UUID) -> float | None:
    """Finalise the round when every command is settled or the deadline passed.

    Returns the seconds to wait before looking again, or None when done.
    """
    dispatch = Dispatch.objects.filter(id=dispatch_id).first()
    if dispatch is None or dispatch.is_final:
        return None
    now = timezone.now()
    if dispatch.status == DispatchStatus.PENDING:
        return 1.0  # allocation not done yet (the sweep re-enqueues it if it was lost)
    if now < dispatch.deadline_at and dispatch.commands.filter(status__in=OPEN_COMMAND).exists():
        return min(COLLECT_POLL_S, (dispatch.deadline_at - now).total_seconds())
    dispatch_finalize(dispatch.id)
    return None


def dispatch_finalize(dispatch_id: uuid.UUID) -> str:
    cfg = settings.V2G
    with transaction.atomic():
        dispatch = (
            Dispatch.objects.select_for_update()
            .select_related("signal")
            .filter(id=dispatch_id, status=DispatchStatus.COLLECTING)
            .first()
        )
        if dispatch is None:
            return "skipped"
        now = timezone.now()
        signal = dispatch.signal
        log_bind(signal_type=signal.signal_type)
        commands = dispatch.commands
        commands.filter(status=CommandStatus.PUBLISHED).update(
            status=CommandStatus.TIMED_OUT, reason=f"no ack within {cfg.dispatch.ack_timeout_seconds:g} s"
        )
        commands.filter(status=CommandStatus.PENDING).update(
            status=CommandStatus.FAILED, reason="not published before the ack deadline"
        )
        totals = commands.aggregate(
            total=Count("id"),
            acked=Count("id", filter=Q(status=CommandStatus.ACKED)),
            acked_kw=Sum("allocated_kw", filter=Q(status=CommandStatus.ACKED)),
        )
        acked_kw = round(totals["acked_kw"] or 0.0, 3)
        dispatch.acknowledged_kw = acked_kw
        if abs(acked_kw - dispatch.target_kw) <= POWER_EPSILON_KW:
            dispatch.status = DispatchStatus.COMPLETED
        elif totals["acked"]:
            dispatch.status = DispatchStatus.PARTIAL
        else:
            dispatch.status = DispatchStatus.FAILED
        dispatch.finished_at = now
        dispatch.save(update_fields=["acknowledged_kw", "status", "finished_at"])
        records = [
            {
                "at": now,
                "dispatch_id": dispatch.id,
                "signal_id": signal.id,
                "signal_type": signal.signal_type,
                "target_kw": dispatch.target_kw,
                "vehicle_id": row["vehicle_id"],
                "command_id": row["id"],
                "allocated_kw": row["allocated_kw"],
                "setpoint_kw": row["power_kw"],
                "status": row["status"],
                "acknowledged": row["status"] == CommandStatus.ACKED,
                "ack_latency_s": row["latency_s"],
                "fallback_round": dispatch.round,
                "score": row["score"],
            }
            for row in commands.values(
                "id", "vehicle_id", "allocated_kw", "power_kw", "status", "latency_s", "score"
            )
        ]
        if cfg.logging.backend == "sqlite":
            dispatch_log_write(records)  # in the same transaction: logged exactly when finalised
        else:
            transaction.on_commit(lambda: dispatch_log_write(records))
        rate = totals["acked"] / totals["total"] if totals["total"] else 0.0
        latencies = [
            r["ack_latency_s"] for r in records if r["acknowledged"] and r["ack_latency_s"] is not None
        ]
        transaction.on_commit(lambda: _round_metrics(signal.signal_type, rate, latencies))
        _fallback_open(dispatch, signal, now)
    log.info(
        "dispatch %s round %d %s: %.1f of %.1f kW acknowledged by %d/%d vehicle(s)",
        *(dispatch.id, dispatch.round, dispatch.status, acked_kw, dispatch.target_kw),
        *(totals["acked"], totals["total"]),
    )
    return dispatch.status


def _round_metrics(signal_type: str, ack_rate: float, latencies: list[float]) -> None:
    """Observed once per round, when it is final (so never twice), and off the
    bridge's hot path: 10,000 histogram observations cost it about 10 %."""
    ACK_RATE.labels(signal_type).set(ack_rate)
    histogram = DISPATCH_LATENCY.labels(signal_type)
    for latency in latencies:
        histogram.observe(max(latency, 0.0))


def signal_acknowledged_kw(signal_id: uuid.UUID) -> float:
    return round(sum(acked_setpoints(signal_id).values()), 3)


def _fallback_open(dispatch: Dispatch, signal: FlexibilitySignal, now: datetime) -> None:
    cfg = settings.V2G.dispatch
    shortfall = round(signal.power_kw - signal_acknowledged_kw(signal.id), 3)
    if (
        cfg.fallback == "noop"
        or dispatch.round >= cfg.max_fallback_rounds
        or abs(shortfall) <= POWER_EPSILON_KW
        or math.copysign(1, shortfall) != math.copysign(1, signal.power_kw)
        or _signal_end(signal) <= now + timedelta(seconds=1)
    ):
        return
    fallback, created = Dispatch.objects.get_or_create(
        signal=signal, round=dispatch.round + 1, defaults={"target_kw": shortfall}
    )
    if created:
        log.info(
            "signal %s: %.1f kW not acknowledged, fallback round %d", signal.id, shortfall, fallback.round
        )
        _enqueue_allocate(fallback.id)


class DispatchStateError(ValueError):
    """An operator's request that the dispatch's state does not allow (the message says why)."""


def dispatch_fallback_rerun(dispatch_id: str | uuid.UUID, *, now: datetime | None = None) -> Dispatch:
    """Open one more fallback round for the power of the dispatch's signal that
    is still not acknowledged, at an operator's request (the admin's action):
    whatever ``dispatch.max_fallback_rounds`` allowed automatically, with the
    configured fallback strategy. Refused (:class:`DispatchStateError`) while a
    round of the signal is still under way, when nothing is missing, when the
    signal is over or when the fallback strategy is ``noop``."""
    now = now or timezone.now()
    cfg = settings.V2G.dispatch
    with transaction.atomic():
        dispatch = Dispatch.objects.select_related("signal").filter(id=dispatch_id).first()
        if dispatch is None:
            raise DispatchStateError(f"no dispatch {dispatch_id}")
        signal = FlexibilitySignal.objects.select_for_update().get(id=dispatch.signal_id)
        rounds = list(signal.dispatches.order_by("round"))
        if any(not r.is_final for r in rounds):
            raise DispatchStateError(f"signal {signal}: a round is still under way, wait for it to finish")
        if cfg.fallback == "noop":
            raise DispatchStateError("the fallback strategy is noop (dispatch.fallback): nothing to re-run")
        if _signal_end(signal) <= now + timedelta(seconds=1):
            raise DispatchStateError(f"signal {signal} is over: its setpoints would be stale")
        shortfall = round(signal.power_kw - signal_acknowledged_kw(signal.id), 3)
        if abs(shortfall) <= POWER_EPSILON_KW or math.copysign(1, shortfall) != math.copysign(
            1, signal.power_kw
        ):
            raise DispatchStateError(f"signal {signal}: everything is acknowledged, nothing to re-dispatch")
        fallback = Dispatch.objects.create(signal=signal, round=rounds[-1].round + 1, target_kw=shortfall)
        _enqueue_allocate(fallback.id)
    log.info(
        "signal %s: fallback round %d re-run by an operator for %.1f kW",
        signal.id, fallback.round, shortfall,
        extra={"dispatch_id": str(fallback.id), "signal_type": signal.signal_type},
    )  # fmt: skip
    return fallback


# --- sweep ---------------------------------------------------------------------------


def dispatch_sweep(now: datetime | None = None, *, grace_s: float | None = None) -> dict[str, int]:
    """Finish what a crashed worker left: lost allocations, publishes and collectors.

    Safe to run any time and twice at once: it only re-enqueues idempotent
    tasks or calls the conditional finalisation. ``grace_s`` defaults to
    ``dispatch.sweep_grace_seconds``.
    """
    from dispatch.tasks import commands_publish_task, dispatch_allocate_task

    now = now or timezone.now()
    if grace_s is None:
        grace_s = settings.V2G.dispatch.sweep_grace_seconds
    stale = now - timedelta(seconds=grace_s)
    counts = {"allocations": 0, "publishes": 0, "finalised": 0}
    for dispatch_id in Dispatch.objects.filter(
        status=DispatchStatus.PENDING, created_at__lt=stale
    ).values_list("id", flat=True):
        dispatch_allocate_task.delay(str(dispatch_id))
        counts["allocations"] += 1
    overdue = Dispatch.objects.filter(status=DispatchStatus.COLLECTING, deadline_at__lt=stale)
    for dispatch_id in overdue.values_list("id", flat=True):
        with log_context(dispatch_id=dispatch_id):
            if dispatch_finalize(dispatch_id) != "skipped":
                counts["finalised"] += 1
    unsent = list(
        Command.objects.filter(
            status=CommandStatus.PENDING,
            dispatch__status=DispatchStatus.COLLECTING,
            dispatch__created_at__lt=stale,
            valid_until__gt=now,
        ).values_list("id", flat=True)[:50_000]
    )
    for start in range(0, len(unsent), PUBLISH_BATCH):
        commands_publish_task.delay([str(cid) for cid in unsent[start : start + PUBLISH_BATCH]], 0)
        counts["publishes"] += 1
    if any(counts.values()):
        log.warning("sweep: %s", counts)
    return counts
