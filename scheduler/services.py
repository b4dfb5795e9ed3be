"""Day-ahead NEBEF plans (SPEC §8): make a day's plan, approve or reject it,
execute the approved one slot by slot.

- ``plan_day`` builds the planner input from the registry, the latest states
  and the learned plug-in profiles (``scheduler.windows`` has the window
  rule), runs the pure planner (``scheduler.domain.generate_plan``) and stores
  a new version of the day's plan; the same inputs again give back the
  version they made (``inputs_digest``), never a duplicate.
- ``plan_approve`` / ``plan_reject`` are the operator's decision on a draft;
  approving supersedes the day's previously approved version.
- ``plan_execute`` turns the approved plan's entries for the slot under way
  into a NEBEF signal whose setpoints are the plan's (dispatch strategy
  ``planned``), once per (plan, slot).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from dispatch import domain as dispatch_domain
from dispatch import services as dispatch_services
from dispatch.models import FlexibilitySignal, SignalSource, SignalType
from fleet.models import Fleet, Vehicle
from scheduler import domain, windows
from scheduler.models import Plan, PlanEntry, PlanSource, PlanStatus
from telemetry import prediction
from telemetry import services as telemetry_services
from v2g_project.config import SchedulerConfig

log = logging.getLogger(__name__)

SOC_STEP = 0.01  # the latest SoC is rounded to 1 % for the planner (see _plan_vehicles)
RESOLUTION_KW = 0.001  # entries are stored and exported in whole watts


class PlanError(ValueError):
    """A plan cannot be made; the message names the configuration key or input at fault."""


class PlanStateError(ValueError):
    """A decision that the plan's state does not allow (approving a rejected plan...)."""


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    created: bool  # False: the same inputs had already made this version


# --- slots and targets --------------------------------------------------------------------


def slot_starts_of(plan: Plan) -> tuple[datetime, ...]:
    """The UTC starts of the plan's slots (as when it was made: its own zone and slot length)."""
    return domain.day_slots(plan.day, plan.time_zone, plan.slot_minutes)


def target_per_slot(
    cfg: SchedulerConfig, day: date, slot_starts: Sequence[datetime], slot_minutes: int
) -> tuple[float, ...]:
    """The target power of each slot, kW (+ = to the grid).

    ``scheduler.target_profile_kw`` when set: either one value per slot of
    this very day (92, 96 or 100 quarter-hours), or one per slot of an
    ordinary local day (96 quarter-hours, 48 half-hours, 24 hours), read by
    local wall-clock time so that one profile serves every day (the spring
    day skips 02:00-03:00, the autumn day uses those values twice). Otherwise
    ``scheduler.target_energy_kwh`` spread evenly over the day's hours (23,
    24 or 25).
    """
    n = len(slot_starts)
    profile = list(cfg.target_profile_kw)
    if profile:
        ordinary = 24 * 60 // slot_minutes
        if len(profile) == n:
            values = profile
        elif len(profile) == ordinary:
            tz = ZoneInfo(cfg.time_zone)
            values = []
            for start in slot_starts:
                local = start.astimezone(tz)
                values.append(profile[(local.hour * 60 + local.minute) // slot_minutes])
        else:
            raise PlanError(
                f"scheduler.target_profile_kw has {len(profile)} value(s), but {day} has {n} slots of "
                f"{slot_minutes} minutes: give {n} values (this day) or {ordinary} (one per slot of an "
                "ordinary day, read by local time), or [] to spread scheduler.target_energy_kwh"
            )
        for k, value in enumerate(values):
            if not math.isfinite(value):
                raise PlanError(f"scheduler.target_profile_kw[{k}] is not a finite number of kW")
        return tuple(round(float(v), 6) for v in values)
    hours = n * slot_minutes / 60
    return (round(cfg.target_energy_kwh / hours, 6),) * n


# --- the planner's input ------------------------------------------------------------------

VEHICLE_COLUMNS = (
    *("id", "is_v2g", "battery_kwh", "max_charge_kw", "max_discharge_kw", "min_soc"),
    *("target_soc", "departure_at", "state__soc"),
)


def _plan_vehicles(
    day: date, slot_starts: Sequence[datetime], slot_minutes: int, *, fleet_id: str | None, now: datetime
) -> tuple[tuple[domain.PlanVehicle, ...], dict[str, str]]:
    """The vehicles given to the planner, and why the others are not.

    Active vehicles (of the fleet) that are V2G capable, with a known SoC and
    at least one availability window on the day (``scheduler.windows``).
    ``min_soc`` is the floor dispatch will enforce at execution (the highest
    of the vehicle's own minimum, ``dispatch.min_soc`` and
    ``dispatch.safe_discharge_floor`` when SoC constraints are on), so that a
    plan is executable as planned; each window ends with the vehicle's
    ``target_soc`` as a departure target. ``soc_start`` is the latest SoC,
    rounded to 1 % so that a rerun a few minutes later plans from the same
    inputs.
    """
    policy = dispatch_services.policy_from_config(settings.V2G.dispatch)
    vehicles = Vehicle.objects.active().order_by("id")
    if fleet_id is not None:
        vehicles = vehicles.filter(fleet_id=fleet_id)
    rows = list(vehicles.values_list(*VEHICLE_COLUMNS))
    engine = telemetry_services.prediction_engine()
    profiles: dict[str, prediction.PlugProfile] = {}
    threshold = 0.5
    if isinstance(engine, prediction.HistoryEngine):
        threshold = engine.threshold
        enough = engine.min_coverage_days * prediction.DAY_S
        profiles = {
            vid: profile
            for vid, profile in telemetry_services.plug_profiles(r[0] for r in rows).items()
            if profile.covered_s >= enough
        }
    quarters = windows.slot_quarters(slot_starts, slot_minutes)
    still_open = windows.open_slots(slot_starts, now)
    planned: list[domain.PlanVehicle] = []
    excluded: dict[str, str] = {}
    for vid, is_v2g, battery, charge, discharge, min_soc, target, departure, soc in rows:
        if not is_v2g or discharge <= 0:
            excluded[vid] = "not V2G capable"
            continue
        if soc is None:
            excluded[vid] = "SoC unknown (no state reported yet)"
            continue
        profile = profiles.get(vid)
        if profile is not None:
            probabilities = profile.probabilities(quarters.ravel()).reshape(quarters.shape)
            mask = windows.profile_mask(probabilities, threshold) & still_open
            mask = windows.cut_at_departure(mask, slot_starts, slot_minutes, departure)
        else:
            mask = windows.until_departure(slot_starts, slot_minutes, departure) & still_open
        spans = windows.windows_of(mask)
        if not spans:
            if profile is not None:
                excluded[vid] = "no slot of the day with its learned plug-in probability above the threshold"
            elif departure is None:
                excluded[vid] = "no learned plug-in profile and no departure time"
            else:
                excluded[vid] = "no learned plug-in profile, and no slot of the day left before its departure"
            continue
        floor = dispatch_domain.soc_floor(dispatch_domain.VehicleState(vid, min_soc=min_soc), policy)
        planned.append(
            domain.PlanVehicle(
                vehicle_id=vid,
                battery_kwh=float(battery),
                max_charge_kw=float(charge),
                max_discharge_kw=float(discharge),
                min_soc=float(floor),
                soc_start=round(min(1.0, max(0.0, soc)) / SOC_STEP) * SOC_STEP,
                windows=spans,
                departure_targets=tuple(_departure_targets(spans, float(target))),
            )
        )
    return tuple(planned), excluded


def _departure_targets(spans: Sequence[tuple[int, int]], target_soc: float) -> list[tuple[int, float]]:
    # The vehicle must hold target_soc when each window ends (windows are
    # end-exclusive: the end is the first slot it is gone); a window that runs
    # to the end of the day is held to it too (it may leave early the next day).
    return [(end, target_soc) for _start, end in spans]


def _canonical(value):
    """JSON-ready, order-stable form of the planner input (dataclasses, tuples,
    datetimes, numpy scalars)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return float(repr(value)) if math.isfinite(value) else repr(value)
    return value


def inputs_digest(inp: domain.PlanInput, *, fleet_id: str | None, time_zone: str) -> str:
    """SHA-256 of the canonical planner input and the plan's scope."""
    canonical = {"fleet_id": fleet_id, "time_zone": time_zone, "input": _canonical(inp)}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_input(
    day: date, *, fleet_id: str | None = None, now: datetime | None = None
) -> tuple[domain.PlanInput, dict[str, str]]:
    """The planner input for a delivery day (and the vehicles left out, with why)."""
    cfg = settings.V2G.scheduler
    now = now or timezone.now()
    slot_minutes = cfg.slot_duration_minutes
    slot_starts = domain.day_slots(day, cfg.time_zone, slot_minutes)
    target = target_per_slot(cfg, day, slot_starts, slot_minutes)
    vehicles, excluded = _plan_vehicles(day, slot_starts, slot_minutes, fleet_id=fleet_id, now=now)
    weights = domain.ObjectiveWeights(
        shortfall=cfg.weights.shortfall,
        degradation=cfg.weights.degradation,
        fairness=cfg.weights.fairness,
        overshoot=cfg.weights.overshoot,
    )
    inp = domain.PlanInput(
        slot_starts=slot_starts,
        slot_minutes=slot_minutes,
        target_kw=target,
        vehicles=vehicles,
        weights=weights,
    )
    return inp, excluded


# --- making a plan ------------------------------------------------------------------------


def plan_day(
    day: date,
    *,
    fleet_id: str | None = None,
    now: datetime | None = None,
    source: str = PlanSource.COMMAND,
    time_limit_s: float | None = None,
) -> PlanOutcome:
    """Plan a delivery day (a local date of ``scheduler.time_zone``) and store
    the result as a new draft version, or return the version the same inputs
    already made. ``fleet_id``: only that fleet's vehicles (None: every fleet).
    Raises :class:`PlanError` naming what is wrong (a configuration key, the fleet)."""
    if fleet_id is not None and not Fleet.objects.filter(id=fleet_id).exists():
        raise PlanError(f"fleet: no fleet {fleet_id!r}")
    cfg = settings.V2G.scheduler
    inp, excluded = plan_input(day, fleet_id=fleet_id, now=now)
    digest = inputs_digest(inp, fleet_id=fleet_id, time_zone=cfg.time_zone)
    existing = Plan.objects.filter(day=day, inputs_digest=digest).first()
    if existing is not None:
        log.info("plan %s: same inputs as version %d (%s), nothing new", day, existing.version, digest[:12])
        return PlanOutcome(existing, False)
    log.info(
        "planning %s: %d vehicle(s), %d slot(s) of %d min, %d vehicle(s) left out",
        *(day, len(inp.vehicles), len(inp.slot_starts), inp.slot_minutes, len(excluded)),
    )
    result = domain.generate_plan(inp, time_limit_s=time_limit_s)
    if result.status == "infeasible_input":
        raise PlanError(f"the planner refused the input of {day}: {'; '.join(result.messages)}")
    outcome = plan_store(day, inp, result, fleet_id=fleet_id, digest=digest, excluded=excluded, source=source)
    plan = outcome.plan
    if outcome.created:
        log.info(
            "plan %s v%d stored: %d entries, %.1f of %.1f kWh planned, shortfall %.1f kWh "
            "(%s, gap %s, %.1f s)",
            *(day, plan.version, plan.entry_count, plan.planned_kwh, plan.target_kwh, plan.shortfall_kwh),
            *(plan.solver_status, plan.gap, plan.solve_s or 0.0),
        )
    return outcome


def plan_store(
    day: date,
    inp: domain.PlanInput,
    result: domain.PlanResult,
    *,
    fleet_id: str | None,
    digest: str,
    excluded: dict[str, str] | None = None,
    source: str = PlanSource.COMMAND,
) -> PlanOutcome:
    """Store a planner result as the day's next version, entries included.

    Entries are rounded to whole watts (zeros dropped) and the planned power
    per slot is the sum of the stored entries, so the per-slot aggregate of
    the export always adds up to the entries it lists.
    """
    n = len(inp.slot_starts)
    rows: dict[tuple[int, str], float] = {}
    for entry in result.entries:
        kw = round(float(entry.power_kw), 3)
        if kw == 0:
            continue
        if not 0 <= entry.slot < n:
            raise PlanError(f"planner returned slot {entry.slot} outside 0-{n - 1}")
        rows[(entry.slot, entry.vehicle_id)] = kw
    planned = [0.0] * n
    for (slot, _vid), kw in rows.items():
        planned[slot] += kw
    planned = [round(kw, 3) + 0.0 for kw in planned]
    shortfall = [round(max(0.0, float(kw)), 3) for kw in result.shortfall_kw]
    hours = inp.slot_minutes / 60
    fields_ = {
        "fleet_id": fleet_id,
        "source": source,
        "inputs_digest": digest,
        "time_zone": settings.V2G.scheduler.time_zone,
        "slot_minutes": inp.slot_minutes,
        "slot_count": n,
        "target_kw": list(inp.target_kw),
        "planned_kw": planned,
        "shortfall_kw": shortfall,
        "target_kwh": round(sum(inp.target_kw) * hours, 3),
        "planned_kwh": round(sum(planned) * hours, 3),
        "shortfall_kwh": round(sum(shortfall) * hours, 3),
        "vehicle_count": len(inp.vehicles),
        "entry_count": len(rows),
        "excluded": excluded or {},
        "messages": [str(m) for m in result.messages],
        "solver_status": str(result.status)[:64],
        "objective": _finite(result.objective),
        "gap": _finite(result.gap),
        "solve_s": _finite(result.solve_s),
    }
    for _attempt in range(5):
        try:
            with transaction.atomic():
                latest = Plan.objects.filter(day=day).aggregate(v=Max("version"))["v"] or 0
                plan = Plan.objects.create(day=day, version=latest + 1, **fields_)
                _entries_insert(plan, rows, inp.slot_starts)
            return PlanOutcome(plan, True)
        except IntegrityError:
            # Another run of the same inputs won (its version is the answer),
            # or another run took this version number (try the next).
            existing = Plan.objects.filter(day=day, inputs_digest=digest).first()
            if existing is not None:
                return PlanOutcome(existing, False)
    raise PlanError(f"could not store a new version of {day}: too many concurrent runs")


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


ENTRY_COLUMNS = ("plan_id", "vehicle_id", "slot", "timeslot", "power_kw")


def _entries_insert(plan: Plan, rows: dict[tuple[int, str], float], slot_starts: Sequence[datetime]) -> None:
    ordered = sorted(rows.items())
    if connection.vendor == "postgresql":
        # COPY: a 10,000-vehicle day is up to a million rows.
        with connection.cursor() as cursor:
            copy_sql = f"COPY {PlanEntry._meta.db_table} ({', '.join(ENTRY_COLUMNS)}) FROM STDIN"
            with cursor.cursor.copy(copy_sql) as copy:
                for (slot, vid), kw in ordered:
                    copy.write_row((plan.id, vid, slot, slot_starts[slot], kw))
        return
    PlanEntry.objects.bulk_create(
        (
            PlanEntry(plan=plan, vehicle_id=vid, slot=slot, timeslot=slot_starts[slot], power_kw=kw)
            for (slot, vid), kw in ordered
        ),
        batch_size=5000,
    )


def plan_next_day(*, now: datetime | None = None, fleet_id: str | None = None) -> PlanOutcome:
    """The daily Beat job: plan tomorrow (local date of ``scheduler.time_zone``).
    The planner gets half the task's soft time limit, leaving the rest for
    loading and storing."""
    now = now or timezone.now()
    tomorrow = now.astimezone(ZoneInfo(settings.V2G.scheduler.time_zone)).date() + timedelta(days=1)
    return plan_day(
        tomorrow,
        fleet_id=fleet_id,
        now=now,
        source=PlanSource.BEAT,
        time_limit_s=settings.V2G.celery.task_soft_time_limit_s / 2,
    )


# --- decisions ----------------------------------------------------------------------------


def _day_end(plan: Plan) -> datetime:
    return slot_starts_of(plan)[-1] + timedelta(minutes=plan.slot_minutes)


def plan_approve(plan_id, *, user=None, now: datetime | None = None) -> tuple[Plan, Plan | None]:
    """Approve a draft: it becomes the day's notified plan (exported, executed);
    the day's previously approved version, if any, is superseded (slots it
    already executed stay executed). Returns (plan, superseded or None).
    Recorded with who and when, and in the admin log."""
    now = now or timezone.now()
    with transaction.atomic():
        plan = Plan.objects.select_for_update().filter(id=plan_id).first()
        if plan is None:
            raise PlanStateError(f"no plan {plan_id}")
        # Lock the day's versions: two approvals of one day run one after the other.
        day_plans = list(Plan.objects.select_for_update().filter(day=plan.day).order_by("version"))
        if plan.status != PlanStatus.DRAFT:
            raise PlanStateError(f"{plan} is {plan.status}: only a draft can be approved")
        if _day_end(plan) <= now:
            raise PlanStateError(f"{plan}: the delivery day is over")
        previous = next((p for p in day_plans if p.status == PlanStatus.APPROVED), None)
        if previous is not None:
            previous.status = PlanStatus.SUPERSEDED
            previous.save(update_fields=["status"])
        plan.status = PlanStatus.APPROVED
        plan.decided_by = user
        plan.decided_at = now
        plan.save(update_fields=["status", "decided_by", "decided_at"])
        message = "Approved" + (f", superseding version {previous.version}" if previous else "")
        _admin_log(user, plan, message)
        if previous is not None:
            _admin_log(user, previous, f"Superseded by version {plan.version}")
    log.info(
        "%s approved by %s%s", plan, user or "-", f", v{previous.version} superseded" if previous else ""
    )
    return plan, previous


def plan_reject(plan_id, *, user=None, now: datetime | None = None) -> Plan:
    """Reject a draft (who and when recorded, and in the admin log)."""
    now = now or timezone.now()
    with transaction.atomic():
        plan = Plan.objects.select_for_update().filter(id=plan_id).first()
        if plan is None:
            raise PlanStateError(f"no plan {plan_id}")
        if plan.status != PlanStatus.DRAFT:
            raise PlanStateError(f"{plan} is {plan.status}: only a draft can be rejected")
        plan.status = PlanStatus.REJECTED
        plan.decided_by = user
        plan.decided_at = now
        plan.save(update_fields=["status", "decided_by", "decided_at"])
        _admin_log(user, plan, "Rejected")
    log.info("%s rejected by %s", plan, user or "-")
    return plan


def _admin_log(user, plan: Plan, message: str) -> None:
    if user is None or not getattr(user, "pk", None):
        return
    LogEntry.objects.log_actions(user.pk, [plan], CHANGE, change_message=message, single_object=True)


# --- execution ----------------------------------------------------------------------------


def signal_external_id(plan: Plan | str, slot: int) -> str:
    """The external id of the NEBEF signal executing a slot of a plan: the
    dispatch de-duplicates on it, so a slot is never submitted twice."""
    plan_id = plan.id if isinstance(plan, Plan) else plan
    return f"plan:{plan_id}:{slot}"


def current_slot(now: datetime) -> tuple[Plan, int, datetime] | None:
    """The approved plan with a slot under way at ``now``: (plan, slot, its start)."""
    local_day = now.astimezone(ZoneInfo(settings.V2G.scheduler.time_zone)).date()
    days = [local_day - timedelta(days=1), local_day, local_day + timedelta(days=1)]
    for plan in Plan.objects.filter(status=PlanStatus.APPROVED, day__in=days).order_by("day"):
        starts = slot_starts_of(plan)
        k = bisect_right(starts, now) - 1
        if k >= 0 and now < starts[k] + timedelta(minutes=plan.slot_minutes):
            return plan, k, starts[k]
    return None


def plan_execute(now: datetime | None = None) -> dict:
    """Execute the approved plan's slot under way (Beat, every quarter-hour):
    one NEBEF signal whose setpoints are the plan's entries for the slot,
    valid until the slot ends. Idempotent per (plan, slot): a second run
    finds the signal by its external id and submits nothing; a slot already
    executed for a version that has since been superseded is not executed
    again (the new version takes over at the next slot)."""
    now = now or timezone.now()
    found = current_slot(now)
    if found is None:
        return {"outcome": "no_approved_plan"}
    plan, slot, start = found
    external_id = signal_external_id(plan, slot)
    report = {"plan_id": str(plan.id), "day": plan.day.isoformat(), "version": plan.version, "slot": slot}
    # This slot of this plan, or the same slot of a version it superseded
    # since (30- and 60-minute slots see several runs): once per slot.
    plan_signals = FlexibilitySignal.objects.filter(source=SignalSource.PLAN)
    same_slot = plan_signals.filter(start_at=start, created_at__gte=start - timedelta(hours=1))  # indexed
    existing = plan_signals.filter(external_id=external_id).first() or same_slot.first()
    if existing is not None:
        return {**report, "outcome": "already_executed", "signal_id": str(existing.id)}
    setpoints = dict(PlanEntry.objects.filter(plan=plan, slot=slot).values_list("vehicle_id", "power_kw"))
    if not setpoints:
        return {**report, "outcome": "nothing_planned"}
    duration_s = plan.slot_minutes * 60
    signal, dispatch = dispatch_services.signal_submit(
        signal_type=SignalType.NEBEF,
        power_kw=round(sum(setpoints.values()), 3),
        duration_s=duration_s,
        start_at=start,
        valid_until=start + timedelta(seconds=duration_s),
        source=SignalSource.PLAN,
        fleet_id=plan.fleet_id,
        external_id=external_id,
        setpoints_kw=setpoints,
    )
    log.info(
        "%s slot %d (%s): NEBEF signal %s, %.3f kW over %d vehicle(s)",
        *(plan, slot, start.isoformat(), signal.id, signal.power_kw, len(setpoints)),
    )
    return {
        **report,
        "outcome": "submitted",
        "signal_id": str(signal.id),
        "dispatch_id": str(dispatch.id),
        "power_kw": signal.power_kw,
        "vehicles": len(setpoints),
    }
