"""Day-ahead NEBEF planner (SPEC §8): pure domain code, no Django.

From a vehicle pool (battery, power limits, minimum SoC, plug-in windows,
departure targets) and a per-slot fleet target, a linear programme (HiGHS
through ``scipy.optimize.linprog``) chooses each vehicle's power in each slot.

Conventions (SPEC §2): ``soc`` is a fraction 0-1; power is signed, positive =
to the grid (discharge / demand reduction), negative = from the grid
(charging); slot starts are aware UTC datetimes. Slots are indices
``0 .. len(slot_starts) - 1`` of one local delivery day (96, 92 or 100
quarter-hours in Europe/Paris; see ``day_slots``).

Physics (as ``telemetry/prediction.py``): efficiency ``sqrt(0.87)`` each way.
Charging ``|P|`` kW for ``h`` hours stores ``|P|·h·η`` kWh; discharging ``P``
kW takes ``P·h/η`` kWh out of the battery. Outside its windows a vehicle's
SoC is held (driving consumption is not modelled), so ``soc_start`` is also
its SoC at the start of the day.

Guarantees of every returned plan (checked by ``plan_check``):

- a vehicle is planned only inside its windows, within
  ``[-max_charge_kw, max_discharge_kw]``;
- its SoC never goes above 1 nor below ``min_soc``; a vehicle that starts
  below ``min_soc`` is never discharged (it may charge);
- at each departure target ``(slot, soc)`` its SoC is at least ``soc`` or,
  when no plan can reach it, at least the SoC of charging at full power from
  the start (the target is lowered and the result says so in ``messages``).

The target is met as closely as possible: per slot, ``shortfall_kw`` is what
the plan misses in the target's direction (``|target| - |planned|`` when the
plan has the target's sign), never hidden.

Objective (energy terms in kWh, so the weights do not depend on the slot
length)::

    shortfall · Σ_t shortfall_t·h          (the target not met)
  + overshoot · Σ_t overshoot_t·h          (power beyond the target, or any at a 0 target)
  + degradation · Σ_v,t |P_v,t|·h          (battery throughput)
  + fairness · mean battery kWh · (max_v discharged_v / battery_v + max_v charged_v / battery_v)

The fairness term is a min-max of each vehicle's share (energy moved over its
battery size, i.e. equivalent cycles), so participation is spread over the
fleet rather than concentrated on a few vehicles.

Scale: vehicles whose normalised parameters are equal (same windows and
departure slots, SoCs, power per battery kWh) form one class solved as a single
variable set, their power split in proportion to their batteries, which
keeps each of them exactly on the same SoC trajectory (and is optimal: the
LP is symmetric in them).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

ETA = math.sqrt(0.87)  # one-way efficiency (round trip ≈ 87 %, DOMAIN)
SLOT_MINUTES = (15, 30, 60)
SOC_TOL = 1e-6  # plan_check tolerance on SoC (fraction): 0.06 Wh on 60 kWh
KW_TOL = 1e-6


@dataclass(frozen=True)
class ObjectiveWeights:
    """Mirror of ``v2g_project.config.ObjectiveWeights`` (same names), plus ``overshoot``."""

    shortfall: float = 1000.0  # per kWh of target not met
    degradation: float = 1.0  # per kWh of battery throughput (grid side)
    fairness: float = 0.1  # per (max share of a vehicle's battery moved) x mean battery kWh
    overshoot: float = 1.0  # per kWh beyond the target (or moved at a 0 target)


@dataclass(frozen=True)
class PlanVehicle:
    vehicle_id: str
    battery_kwh: float
    max_charge_kw: float  # >= 0
    max_discharge_kw: float  # >= 0 (0: not V2G capable)
    min_soc: float  # 0-1, never go below
    soc_start: float  # 0-1, SoC at the start of its first window (held until then)
    windows: tuple[tuple[int, int], ...]  # plugged-in slot ranges [start, end)
    departure_targets: tuple[tuple[int, float], ...] = ()  # (slot it leaves at, min SoC then)


@dataclass(frozen=True)
class PlanInput:
    slot_starts: tuple[datetime, ...]  # aware UTC, one per slot of the local delivery day
    slot_minutes: int  # 15, 30 or 60
    target_kw: tuple[float, ...]  # per slot, + = to the grid, - = charging
    vehicles: tuple[PlanVehicle, ...]
    weights: ObjectiveWeights = ObjectiveWeights()


@dataclass(frozen=True)
class PlanEntry:
    vehicle_id: str
    slot: int
    power_kw: float  # signed like the target


@dataclass(frozen=True)
class PlanResult:
    entries: tuple[PlanEntry, ...]  # non-zero setpoints only, sorted by (slot, vehicle_id)
    planned_kw: tuple[float, ...]  # per slot, sum of entries
    shortfall_kw: tuple[float, ...]  # per slot, >= 0: target missed in its direction
    status: str  # "optimal", "feasible" (gap > 0 or time limit), "infeasible_input"
    objective: float  # of the returned plan (see module docstring)
    gap: float | None  # relative optimality gap (0 for an exact LP optimum), None if unknown
    solve_s: float
    messages: tuple[str, ...] = ()  # input problems, lowered departure targets, fallbacks
    lower_bound: float | None = None  # proven lower bound on the objective of any plan
    classes: int = 0  # variable sets the LP solved (vehicles grouped when identical)


# --- time -------------------------------------------------------------------


def day_slots(day: date, tz: str, slot_minutes: int) -> tuple[datetime, ...]:
    """UTC starts of each slot of the local ``day`` in ``tz``: 96/92/100 quarter-hours
    (24/23/25 hours) in Europe/Paris on ordinary/spring/autumn days."""
    if slot_minutes not in SLOT_MINUTES:
        raise ValueError(f"slot_minutes must be one of {SLOT_MINUTES}, got {slot_minutes}")
    zone = ZoneInfo(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
    seconds = (end - start).total_seconds()
    step = slot_minutes * 60
    if seconds % step:
        raise ValueError(
            f"{day} in {tz} lasts {seconds / 3600} h, not a whole number of {slot_minutes}-min slots"
        )
    return tuple(start + timedelta(seconds=i * step) for i in range(int(seconds // step)))


# --- input normalisation ------------------------------------------------------


@dataclass
class _Fleet:
    """Validated vehicles as arrays, sorted by vehicle_id (row i = vehicle i)."""

    ids: list[str]
    battery: np.ndarray  # kWh
    max_c: np.ndarray  # kW
    max_d: np.ndarray  # kW (0 when the vehicle starts below min_soc)
    soc0: np.ndarray
    floor: np.ndarray  # min(min_soc, soc0)
    plugged: np.ndarray  # bool (V, T)
    targets: list[tuple[tuple[int, float], ...]]  # per vehicle, lowered to reachable, sorted
    windows: list[tuple[tuple[int, int], ...]]  # merged, sorted
    messages: list[str] = field(default_factory=list)


def _merge(windows: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((a, b) for a, b in merged)


def _validate(inp: PlanInput) -> list[str]:
    problems: list[str] = []
    n = len(inp.slot_starts)
    if inp.slot_minutes not in SLOT_MINUTES:
        problems.append(f"slot_minutes must be one of {SLOT_MINUTES}, got {inp.slot_minutes}")
    if n == 0:
        problems.append("no slots")
    if len(inp.target_kw) != n:
        problems.append(f"target_kw has {len(inp.target_kw)} values for {n} slots")
    if any(not math.isfinite(t) for t in inp.target_kw):
        problems.append("target_kw has a non-finite value")
    for i, at in enumerate(inp.slot_starts):
        if at.tzinfo is None or at.utcoffset() is None:
            problems.append(f"slot {i} start {at} is not timezone-aware")
            break
        if i and at - inp.slot_starts[i - 1] != timedelta(minutes=inp.slot_minutes):
            problems.append(f"slot {i} does not start {inp.slot_minutes} min after slot {i - 1}")
            break
    w = inp.weights
    if any(not (math.isfinite(x) and x >= 0) for x in (w.shortfall, w.degradation, w.fairness, w.overshoot)):
        problems.append("objective weights must be finite and >= 0")
    seen: set[str] = set()
    for v in inp.vehicles:
        name = f"vehicle {v.vehicle_id!r}"
        if v.vehicle_id in seen:
            problems.append(f"{name} appears twice")
        seen.add(v.vehicle_id)
        numbers = (v.battery_kwh, v.max_charge_kw, v.max_discharge_kw, v.min_soc, v.soc_start)
        if not all(math.isfinite(x) for x in numbers):
            problems.append(f"{name}: non-finite number")
            continue
        if v.battery_kwh <= 0:
            problems.append(f"{name}: battery_kwh must be > 0")
        if v.max_charge_kw < 0 or v.max_discharge_kw < 0:
            problems.append(f"{name}: power limits must be >= 0")
        if not (0 <= v.min_soc <= 1 and 0 <= v.soc_start <= 1):
            problems.append(f"{name}: min_soc and soc_start must be within 0-1")
        for start, end in v.windows:
            if not (0 <= start < end <= n):
                problems.append(f"{name}: window [{start}, {end}) outside slots 0-{n}")
        for slot, soc in v.departure_targets:
            if not (0 <= slot <= n) or not (math.isfinite(soc) and 0 <= soc <= 1):
                problems.append(f"{name}: departure target ({slot}, {soc}) outside slots 0-{n} or SoC 0-1")
    return problems


def _fleet(inp: PlanInput) -> _Fleet:
    vehicles = sorted(inp.vehicles, key=lambda v: v.vehicle_id)
    n_slots = len(inp.slot_starts)
    h = inp.slot_minutes / 60
    count = len(vehicles)
    fleet = _Fleet(
        ids=[v.vehicle_id for v in vehicles],
        battery=np.array([v.battery_kwh for v in vehicles], dtype=float),
        max_c=np.array([v.max_charge_kw for v in vehicles], dtype=float),
        max_d=np.array([v.max_discharge_kw for v in vehicles], dtype=float),
        soc0=np.array([v.soc_start for v in vehicles], dtype=float),
        floor=np.array([min(v.min_soc, v.soc_start) for v in vehicles], dtype=float),
        plugged=np.zeros((count, n_slots), dtype=bool),
        targets=[],
        windows=[],
    )
    below = np.array([v.soc_start < v.min_soc for v in vehicles], dtype=bool)
    fleet.max_d = np.where(below, 0.0, fleet.max_d)
    for i, v in enumerate(vehicles):
        windows = _merge(v.windows)
        fleet.windows.append(windows)
        for start, end in windows:
            fleet.plugged[i, start:end] = True
    # Highest SoC reachable at each slot boundary by charging at full power from the start.
    reach = _max_charge_soc(fleet, h)
    for i, v in enumerate(vehicles):
        wanted: dict[int, float] = {}
        for slot, soc in v.departure_targets:
            wanted[slot] = max(wanted.get(slot, 0.0), soc)
        targets = []
        for slot in sorted(wanted):
            soc = wanted[slot]
            if soc > reach[i, slot] + 1e-12:
                fleet.messages.append(
                    f"vehicle {v.vehicle_id!r}: departure target {soc:.4f} at slot {slot} cannot be reached "
                    f"(at most {reach[i, slot]:.4f} by charging at full power); planned to that"
                )
                soc = float(reach[i, slot])
            if soc > fleet.floor[i]:  # otherwise the floor already implies it
                targets.append((slot, soc))
        fleet.targets.append(tuple(targets))
    return fleet


def _max_charge_soc(fleet: _Fleet, h: float) -> np.ndarray:
    """SoC at each slot boundary (V, T+1) when charging at full power in every plugged slot."""
    count, n_slots = fleet.plugged.shape
    out = np.empty((count, n_slots + 1))
    soc = fleet.soc0.copy()
    out[:, 0] = soc
    step = np.divide(fleet.max_c * h * ETA, fleet.battery, out=np.zeros(count), where=fleet.battery > 0)
    for t in range(n_slots):
        soc = np.where(fleet.plugged[:, t], np.minimum(1.0, soc + step), soc)
        out[:, t + 1] = soc
    return out


# --- classes ------------------------------------------------------------------


@dataclass
class _Class:
    """Vehicles solved as one: SoC trajectory ``soc0_i + delta(t)`` for every member i,
    member power = class rate (kW per battery kWh) x its battery."""

    members: np.ndarray  # row indices into _Fleet
    battery: float  # sum of members' batteries
    rate_c: float  # max charge, kW per kWh, valid for every member
    rate_d: float
    lo: float  # delta never below (each member stays >= its floor)
    hi: float  # delta never above (each member stays <= 1)
    slots: np.ndarray  # plugged slots, sorted, common to all members
    need: dict[int, float]  # slot boundary -> delta at least (departure targets)


def _exact_classes(fleet: _Fleet) -> list[_Class]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(fleet.ids)):
        b = fleet.battery[i]
        key = (
            fleet.windows[i],
            fleet.targets[i],
            float(fleet.soc0[i]),
            float(fleet.floor[i]),
            float(fleet.max_c[i] / b),
            float(fleet.max_d[i] / b),
        )
        groups[key].append(i)
    classes = []
    for key in sorted(groups, key=lambda k: groups[k][0]):
        classes.append(_make_class(fleet, np.array(groups[key])))
    return classes


def _make_class(fleet: _Fleet, members: np.ndarray) -> _Class:
    """Conservative class over ``members`` (exact when they are identical in SoC terms):
    common plugged slots, the smallest power per kWh, the tightest SoC bounds."""
    battery = fleet.battery[members]
    soc0 = fleet.soc0[members]
    plugged = fleet.plugged[members].all(axis=0)
    slots = np.flatnonzero(plugged)
    need: dict[int, float] = {}
    for i in members:
        for slot, soc in fleet.targets[i]:
            need[slot] = max(need.get(slot, -1.0), soc - fleet.soc0[i])
    return _Class(
        members=members,
        battery=float(battery.sum()),
        rate_c=float((fleet.max_c[members] / battery).min()),
        rate_d=float((fleet.max_d[members] / battery).min()),
        lo=float((fleet.floor[members] - soc0).max()),
        hi=float((1.0 - soc0).min()),
        slots=slots,
        need=need,
    )


# --- the linear programme -------------------------------------------------------


@dataclass
class _Solution:
    status: str  # "optimal" | "time_limit" | "failed"
    rates: dict[int, np.ndarray]  # class index -> net rate per plugged slot (kW per kWh)
    objective: float
    message: str


def _solve(
    classes: list[_Class],
    target: np.ndarray,
    h: float,
    weights: ObjectiveWeights,
    mean_battery: float,
    time_limit_s: float | None,
) -> _Solution:
    """Variables: per (class, plugged slot) charge rate, discharge rate, SoC delta after
    the slot; per slot deviations above / below the target; two fairness maxima."""
    n_slots = len(target)
    sizes = np.array([len(c.slots) for c in classes], dtype=np.int64)
    n_pairs = int(sizes.sum())
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    pair_class = np.repeat(np.arange(len(classes)), sizes)
    pair_slot = np.concatenate([c.slots for c in classes]) if classes else np.zeros(0, dtype=np.int64)
    pair_battery = np.repeat(np.array([c.battery for c in classes]), sizes)
    first = np.zeros(n_pairs, dtype=bool)
    first[offsets[:-1][sizes > 0]] = True

    # Column layout.
    rc0, rd0, e0 = 0, n_pairs, 2 * n_pairs
    up0 = 3 * n_pairs  # planned above target
    dn0 = up0 + n_slots  # planned below target
    zd, zc = dn0 + n_slots, dn0 + n_slots + 1
    n_cols = zc + 1

    cost = np.zeros(n_cols)
    cost[rc0:rd0] = weights.degradation * h * pair_battery
    cost[rd0:e0] = weights.degradation * h * pair_battery
    short_up = np.where(target < 0, weights.shortfall, weights.overshoot)  # above a charging target
    short_dn = np.where(target > 0, weights.shortfall, weights.overshoot)  # below a discharge target
    cost[up0:dn0] = short_up * h
    cost[dn0:zd] = short_dn * h
    cost[zd] = cost[zc] = weights.fairness * mean_battery

    lower = np.zeros(n_cols)
    upper = np.full(n_cols, np.inf)
    upper[rc0:rd0] = np.repeat([c.rate_c for c in classes], sizes)
    upper[rd0:e0] = np.repeat([c.rate_d for c in classes], sizes)
    lower[e0:up0] = np.repeat([c.lo for c in classes], sizes)
    upper[e0:up0] = np.repeat([c.hi for c in classes], sizes)
    for k, c in enumerate(classes):
        for slot, need in c.need.items():
            # The delta at the boundary `slot` is the one after the last plugged slot before it.
            j = int(np.searchsorted(c.slots, slot)) - 1
            if j >= 0:
                col = e0 + offsets[k] + j
                lower[col] = min(max(lower[col], need), upper[col])

    # Dynamics: e_j - e_{j-1} - η h rc_j + h/η rd_j = 0.
    rows = np.arange(n_pairs)
    prev = np.flatnonzero(~first)
    r = [rows, rows, rows, prev]
    c_ = [e0 + rows, rc0 + rows, rd0 + rows, e0 + prev - 1]
    v = [np.ones(n_pairs), np.full(n_pairs, -ETA * h), np.full(n_pairs, h / ETA), -np.ones(len(prev))]
    # Balance: Σ B (rd - rc) - up + dn = target (per slot).
    bal = n_pairs + pair_slot
    r += [bal, bal, n_pairs + np.arange(n_slots), n_pairs + np.arange(n_slots)]
    c_ += [rd0 + rows, rc0 + rows, up0 + np.arange(n_slots), dn0 + np.arange(n_slots)]
    v += [pair_battery, -pair_battery, -np.ones(n_slots), np.ones(n_slots)]
    a_eq = sparse.csr_matrix(
        (np.concatenate(v), (np.concatenate(r), np.concatenate(c_))), shape=(n_pairs + n_slots, n_cols)
    )
    b_eq = np.concatenate((np.zeros(n_pairs), target))
    # Fairness: Σ_j h rd_j - zd <= 0 and Σ_j h rc_j - zc <= 0, per class.
    k_count = len(classes)
    a_ub = sparse.csr_matrix(
        (
            np.concatenate((np.full(n_pairs, h), np.full(n_pairs, h), -np.ones(2 * k_count))),
            (
                np.concatenate(
                    (pair_class, k_count + pair_class, np.arange(k_count), k_count + np.arange(k_count))
                ),
                np.concatenate((rd0 + rows, rc0 + rows, np.full(k_count, zd), np.full(k_count, zc))),
            ),
        ),
        shape=(2 * k_count, n_cols),
    )
    b_ub = np.zeros(2 * k_count)

    options: dict = {"presolve": True}
    if time_limit_s is not None:
        options["time_limit"] = max(float(time_limit_s), 0.01)
    res = linprog(
        cost,
        A_ub=a_ub if k_count else None,
        b_ub=b_ub if k_count else None,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.column_stack((lower, upper)),
        method="highs",
        options=options,
    )
    if res.status != 0 or res.x is None:
        status = "time_limit" if res.status == 1 else "failed"
        return _Solution(status, {}, math.inf, str(res.message))
    x = res.x
    net = x[rd0:e0] - x[rc0:rd0]
    rates = {k: net[offsets[k] : offsets[k + 1]] for k in range(k_count)}
    return _Solution("optimal", rates, float(res.fun), str(res.message))


# --- from class rates to a checked per-vehicle plan -------------------------------


def _powers(fleet: _Fleet, classes: list[_Class], rates: dict[int, np.ndarray], n_slots: int) -> np.ndarray:
    power = np.zeros((len(fleet.ids), n_slots))
    for k, c in enumerate(classes):
        rate = rates.get(k)
        if rate is None or not len(c.slots):
            continue
        power[np.ix_(c.members, c.slots)] = np.outer(fleet.battery[c.members], rate)
    return power


def _repair(fleet: _Fleet, power: np.ndarray, h: float) -> np.ndarray:
    """Clip to the limits and the windows, then walk the SoC forward clamping each step
    into [floor, 1]: solver tolerances (1e-7) can never become a violation."""
    power = np.where(fleet.plugged, power, 0.0)
    power = np.clip(power, -fleet.max_c[:, None], fleet.max_d[:, None])
    power[np.abs(power) < 1e-7] = 0.0
    soc = fleet.soc0.copy()
    for t in range(power.shape[1]):
        p = power[:, t]
        room_d = np.maximum(soc - fleet.floor, 0.0) * fleet.battery * ETA / h  # kW that keeps soc >= floor
        room_c = np.maximum(1.0 - soc, 0.0) * fleet.battery / (ETA * h)  # kW that keeps soc <= 1
        p = np.where(p > 0, np.minimum(p, room_d), np.maximum(p, -room_c))
        power[:, t] = p
        soc = _step(soc, p, fleet.battery, h)
    return power


def _step(soc: np.ndarray, p: np.ndarray, battery: np.ndarray, h: float) -> np.ndarray:
    return soc - np.where(p > 0, p / ETA, p * ETA) * h / battery


def _objective(fleet: _Fleet, power: np.ndarray, target: np.ndarray, h: float, w: ObjectiveWeights) -> float:
    planned = power.sum(axis=0)
    above = np.maximum(planned - target, 0.0)
    below = np.maximum(target - planned, 0.0)
    value = float(
        (np.where(target < 0, w.shortfall, w.overshoot) * above).sum() * h
        + (np.where(target > 0, w.shortfall, w.overshoot) * below).sum() * h
        + w.degradation * np.abs(power).sum() * h
    )
    if len(fleet.ids):
        mean_battery = float(fleet.battery.mean())
        share_d = (np.maximum(power, 0.0).sum(axis=1) * h / fleet.battery).max()
        share_c = (np.maximum(-power, 0.0).sum(axis=1) * h / fleet.battery).max()
        value += w.fairness * mean_battery * float(share_d + share_c)
    return value


def _shortfall(target: np.ndarray, planned: np.ndarray) -> np.ndarray:
    return np.where(
        target > 0,
        np.maximum(target - planned, 0.0),
        np.where(target < 0, np.maximum(planned - target, 0.0), 0.0),
    )


def _result(
    inp: PlanInput,
    fleet: _Fleet,
    power: np.ndarray,
    *,
    status: str,
    gap: float | None,
    lower_bound: float | None,
    started: float,
    classes: int,
    messages: list[str],
) -> PlanResult:
    target = np.asarray(inp.target_kw, dtype=float)
    h = inp.slot_minutes / 60
    entries = []
    slots, rows = np.nonzero(power.T != 0.0)  # slot-major, rows sorted by id: (slot, vehicle_id) order
    for t, i in zip(slots.tolist(), rows.tolist(), strict=True):
        entries.append(PlanEntry(fleet.ids[i], t, float(power[i, t])))
    planned = power.sum(axis=0)
    return PlanResult(
        entries=tuple(entries),
        planned_kw=tuple(float(x) for x in planned),
        shortfall_kw=tuple(float(x) for x in _shortfall(target, planned)),
        status=status,
        objective=_objective(fleet, power, target, h, inp.weights),
        gap=gap,
        solve_s=time.perf_counter() - started,
        messages=tuple(messages),
        lower_bound=lower_bound,
        classes=classes,
    )


def generate_plan(inp: PlanInput, *, time_limit_s: float | None = None) -> PlanResult:
    """Plan every vehicle's power per slot to meet ``inp.target_kw`` as closely as possible.

    Deterministic: vehicles are sorted by id and the LP is built in that order, so the
    same input gives the same plan. Bad input is not raised: the result has status
    ``"infeasible_input"``, no entries, the whole target as shortfall and the problems
    in ``messages``.
    """
    started = time.perf_counter()
    problems = _validate(inp)
    if problems:
        target = [abs(t) if math.isfinite(t) else 0.0 for t in inp.target_kw]
        return PlanResult(
            entries=(),
            planned_kw=tuple(0.0 for _ in target),
            shortfall_kw=tuple(target),
            status="infeasible_input",
            objective=0.0,
            gap=None,
            solve_s=time.perf_counter() - started,
            messages=tuple(problems),
        )
    fleet = _fleet(inp)
    target = np.asarray(inp.target_kw, dtype=float)
    n_slots = len(target)
    h = inp.slot_minutes / 60
    classes = _exact_classes(fleet)
    mean_battery = float(fleet.battery.mean()) if len(fleet.ids) else 0.0
    solution = _solve(classes, target, h, inp.weights, mean_battery, time_limit_s)
    messages = list(fleet.messages)
    if solution.status == "optimal":
        power = _repair(fleet, _powers(fleet, classes, solution.rates, n_slots), h)
        return _result(
            inp, fleet, power, status="optimal", gap=0.0, lower_bound=solution.objective,
            started=started, classes=len(classes), messages=messages,
        )  # fmt: skip
    # No LP solution in time: the safe plan (charge at full power until every departure
    # target holds, nothing else), so the caller still gets a valid plan.
    messages.append(f"LP not solved ({solution.message}); fallback plan: departure charging only")
    power = _repair(fleet, _fallback(fleet, h), h)
    return _result(
        inp, fleet, power, status="feasible", gap=None,
        lower_bound=None, started=started, classes=len(classes), messages=messages,
    )  # fmt: skip


def _fallback(fleet: _Fleet, h: float) -> np.ndarray:
    """Charge at full power in plugged slots until the vehicle's last departure target holds."""
    count, n_slots = fleet.plugged.shape
    power = np.zeros((count, n_slots))
    for i in range(count):
        if not fleet.targets[i]:
            continue
        last = max(slot for slot, _ in fleet.targets[i])
        power[i, :last] = np.where(fleet.plugged[i, :last], -fleet.max_c[i], 0.0)
    return power


# --- checking ------------------------------------------------------------------


def plan_check(inp: PlanInput, result: PlanResult) -> list[str]:
    """Every way ``result`` breaks a guarantee for ``inp``, as messages (empty: valid).

    Independent of the planner's internals: it re-simulates each vehicle's SoC from
    the entries alone."""
    problems: list[str] = []
    n_slots = len(inp.slot_starts)
    h = inp.slot_minutes / 60
    if result.status == "infeasible_input":
        return [] if not result.entries else ["entries on infeasible input"]
    vehicles = {v.vehicle_id: v for v in inp.vehicles}
    power: dict[str, dict[int, float]] = defaultdict(dict)
    keys = [(e.slot, e.vehicle_id) for e in result.entries]
    if keys != sorted(keys):
        problems.append("entries are not sorted by (slot, vehicle_id)")
    for e in result.entries:
        v = vehicles.get(e.vehicle_id)
        if v is None:
            problems.append(f"entry for unknown vehicle {e.vehicle_id!r}")
            continue
        if not 0 <= e.slot < n_slots:
            problems.append(f"{e.vehicle_id}: slot {e.slot} out of range")
            continue
        if e.slot in power[e.vehicle_id]:
            problems.append(f"{e.vehicle_id}: two entries at slot {e.slot}")
        if e.power_kw == 0 or not math.isfinite(e.power_kw):
            problems.append(f"{e.vehicle_id}: zero or non-finite entry at slot {e.slot}")
        power[e.vehicle_id][e.slot] = e.power_kw
        if not any(a <= e.slot < b for a, b in v.windows):
            problems.append(f"{e.vehicle_id}: planned at slot {e.slot}, outside its windows")
        if e.power_kw > v.max_discharge_kw + KW_TOL or -e.power_kw > v.max_charge_kw + KW_TOL:
            problems.append(f"{e.vehicle_id}: {e.power_kw} kW at slot {e.slot} beyond its limits")
    for v in inp.vehicles:
        soc = reach = v.soc_start
        plan = power.get(v.vehicle_id, {})
        targets = defaultdict(float)
        for slot, soc_min in v.departure_targets:
            targets[slot] = max(targets[slot], soc_min)
        step_c = v.max_charge_kw * h * ETA / v.battery_kwh
        for t in range(n_slots + 1):
            if t in targets and soc < min(targets[t], reach) - SOC_TOL:
                problems.append(
                    f"{v.vehicle_id}: SoC {soc:.6f} at slot {t} below its departure target {targets[t]}"
                )
            if t == n_slots:
                break
            p = plan.get(t, 0.0)
            before = soc
            soc -= (p / ETA if p > 0 else p * ETA) * h / v.battery_kwh
            if any(a <= t < b for a, b in v.windows):
                reach = min(1.0, reach + step_c)
            if soc > 1 + SOC_TOL:
                problems.append(f"{v.vehicle_id}: SoC {soc:.6f} above 1 after slot {t}")
            if p > 0 and soc < v.min_soc - SOC_TOL:
                problems.append(
                    f"{v.vehicle_id}: discharged at slot {t} to SoC {soc:.6f}, below min_soc {v.min_soc} "
                    f"(from {before:.6f})"
                )
    if len(result.planned_kw) != n_slots or len(result.shortfall_kw) != n_slots:
        problems.append("planned_kw / shortfall_kw do not have one value per slot")
        return problems
    sums = np.zeros(n_slots)
    for e in result.entries:
        if 0 <= e.slot < n_slots:
            sums[e.slot] += e.power_kw
    planned = np.asarray(result.planned_kw)
    if not np.allclose(sums, planned, rtol=1e-9, atol=1e-6):
        problems.append("planned_kw is not the sum of the entries")
    expected = _shortfall(np.asarray(inp.target_kw, dtype=float), planned)
    if not np.allclose(expected, np.asarray(result.shortfall_kw), rtol=1e-9, atol=1e-6):
        problems.append("shortfall_kw does not match target_kw and planned_kw")
    return problems
