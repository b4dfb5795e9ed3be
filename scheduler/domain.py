"""Day-ahead NEBEF planner (SPEC §8): pure domain code, no Django.

From a vehicle pool (battery, power limits, minimum SoC, plug-in windows,
departure targets) and a per-slot fleet target, a linear programme (HiGHS
through ``highspy``) chooses each vehicle's power in each slot.

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
fleet rather than concentrated on a few vehicles. Charging needed for a
departure target is placed where the target asks for charging first, then
where it is 0 (overshoot) and last against a discharge target.

A car cannot charge and discharge at once, an LP can (wasting energy, to
absorb more when full): such optima are solved again one way (see
``_solve_one_way``). Vehicles may still trade energy with each other (one
discharging while another charges) when that meets a charging target a full
fleet could not otherwise absorb; the weights decide.

``lower_bound`` is the optimum of the LP (or of its relaxation, see below):
no plan can do better, so ``gap`` = (objective - lower_bound) / objective is a
proven bound on how far the plan is from the best one.

Scale (same guarantees for every vehicle; see ``generate_plan``):

- time blocks: between fleet-wide breakpoints (window edges, departures,
  target changes) a constant power per vehicle is optimal, so the LP has one
  variable per block rather than per slot (96 slots are ~20 blocks a vehicle);
- classes: vehicles equal in SoC terms share one set of variables, split in
  proportion to their batteries (exact);
- beyond ``EXACT_MAX_PAIRS``: a relaxation (runs of similar vehicles as one
  battery: a proven lower bound) then exact LPs over batches of vehicles, each
  given the target minus what the others plan, in sweeps that start each
  batch's LP from its last basis; the gap to the bound is reported.

Same input, same plan: vehicles are sorted by id, every LP is built in that
order and HiGHS is deterministic. Only a ``time_limit_s`` that is hit makes
the result depend on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import highspy
import numpy as np
from scipy import sparse

ETA = math.sqrt(0.87)  # one-way efficiency (round trip ≈ 87 %, DOMAIN)
SLOT_MINUTES = (15, 30, 60)
INF = highspy.kHighsInf
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


# --- time blocks -----------------------------------------------------------------


@dataclass
class _Blocks:
    """Runs of slots between fleet-wide breakpoints (any window edge, any departure
    slot, any change of the target). Within a block every vehicle is plugged in or
    not throughout and the target is constant, so a constant power per vehicle over
    the block loses nothing: averaging any plan over each block keeps its energy at
    the block ends (SoC moves linearly in between, so within bounds), its power
    within limits, its throughput and shares, and cannot raise the (convex) cost of
    missing a constant target. The LP therefore has one variable per block, not per
    slot."""

    start: np.ndarray  # first slot of each block
    end: np.ndarray  # slot after the last
    plugged: np.ndarray  # bool (V, NB)

    @property
    def length(self) -> np.ndarray:
        return self.end - self.start


def _blocks(fleet: _Fleet, target: np.ndarray) -> _Blocks:
    n_slots = len(target)
    cuts = {0, n_slots}
    plugged = fleet.plugged
    if plugged.shape[0]:
        cuts.update((np.flatnonzero((plugged[:, 1:] != plugged[:, :-1]).any(axis=0)) + 1).tolist())
    cuts.update((np.flatnonzero(np.diff(target) != 0) + 1).tolist())
    for targets in fleet.targets:
        cuts.update(slot for slot, _ in targets)
    edges = np.array(sorted(cuts), dtype=np.int64)
    start, end = edges[:-1], edges[1:]
    return _Blocks(start=start, end=end, plugged=plugged[:, start])


# --- LP over blocks ------------------------------------------------------------------


@dataclass
class _LP:
    """Variable sets ("classes") over blocks: for each pair (class, block where it is
    plugged in), sorted by class then block, a charge and a discharge power (kW,
    grid side) and the class state after the block, as a fraction of ``scale`` kWh:
    ``e_after = e_before + (η·C - D/η)·h·len / scale``, starting at ``e_init``."""

    pair_class: np.ndarray
    pair_block: np.ndarray
    cap_c: np.ndarray  # kW
    cap_d: np.ndarray
    e_lo: np.ndarray  # state bounds after the pair's block
    e_hi: np.ndarray
    scale: np.ndarray  # per class, kWh
    e_init: np.ndarray  # per class
    # Optional cuts (class, blocks, kWh): the class charges at least that much from the
    # grid over those blocks.
    cuts: list[tuple[int, np.ndarray, float]] = field(default_factory=list)
    # For classes of real vehicles (see _solve_one_way): a car charges or discharges, so
    # (C, D) lies in the hull C/cap_c + D/cap_d <= 1 (the LP may still mix both).
    one_way: bool = False


@dataclass
class _Solution:
    status: str  # "optimal" | "time_limit" | "failed"
    charge: np.ndarray  # kW per pair
    discharge: np.ndarray
    objective: float
    message: str


_banner_lock = threading.Lock()
_banner_done = False


def _highs() -> highspy.Highs:
    """A silent HiGHS instance. HiGHS prints a banner on stdout when a process makes its
    first instance; that one is made with stdout pointed at /dev/null, so the output of
    a command (a CSV export, JSON) stays clean."""
    global _banner_done
    if not _banner_done:
        with _banner_lock:
            if not _banner_done:
                try:
                    sys.stdout.flush()
                    saved = os.dup(1)
                except (OSError, ValueError):  # no real stdout: nothing to protect
                    saved = None
                try:
                    if saved is not None:
                        with open(os.devnull, "wb") as null:
                            os.dup2(null.fileno(), 1)
                    highspy.Highs()
                finally:
                    if saved is not None:
                        os.dup2(saved, 1)
                        os.close(saved)
                _banner_done = True
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    return highs


class _Model:
    """One LP over the pairs of ``lp``, minimising the objective of the module docstring,
    held in a HiGHS instance: a new target or share floor (all that changes for a batch
    between sweeps) is solved again from the last basis.

    ``target`` per block: what these classes should deliver; ``sign`` per block: the sign
    of the fleet target (which side of it is a shortfall); ``share_floor``: the largest
    discharge and charge shares outside this LP (the fairness maxima never count below)."""

    def __init__(
        self,
        lp: _LP,
        blocks: _Blocks,
        target: np.ndarray,
        sign: np.ndarray,
        h: float,
        weights: ObjectiveWeights,
        mean_battery: float,
        share_floor: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        n_blocks = len(blocks.start)
        n_pairs = len(lp.pair_class)
        k_count = len(lp.scale)
        span = blocks.length[lp.pair_block] * h  # hours of each pair's block
        scale = lp.scale[lp.pair_class]
        first = np.ones(n_pairs, dtype=bool)
        first[1:] = lp.pair_class[1:] != lp.pair_class[:-1]
        rows = np.arange(n_pairs)
        prev = np.flatnonzero(~first)

        rc0, rd0, e0 = 0, n_pairs, 2 * n_pairs
        up0 = 3 * n_pairs  # planned above the target
        dn0 = up0 + n_blocks  # planned below the target
        zd, zc = dn0 + n_blocks, dn0 + n_blocks + 1
        n_cols = zc + 1
        self.n_pairs, self.zd, self.zc = n_pairs, zd, zc
        self.balance_rows = n_pairs + np.arange(n_blocks, dtype=np.int32)

        hours = blocks.length * h
        cost = np.zeros(n_cols)
        cost[rc0:e0] = weights.degradation * np.concatenate((span, span))
        cost[up0:dn0] = np.where(sign < 0, weights.shortfall, weights.overshoot) * hours
        cost[dn0:zd] = np.where(sign > 0, weights.shortfall, weights.overshoot) * hours
        cost[zd] = cost[zc] = weights.fairness * mean_battery

        lower = np.zeros(n_cols)
        upper = np.full(n_cols, INF)
        upper[rc0:rd0] = lp.cap_c
        upper[rd0:e0] = lp.cap_d
        lower[e0:up0] = lp.e_lo
        upper[e0:up0] = lp.e_hi
        lower[zd], lower[zc] = share_floor

        # Dynamics: e_j - e_{j-1} - η·span/scale·C_j + span/(η·scale)·D_j = e_init if j is first else 0.
        r = [rows, rows, rows, prev]
        c = [e0 + rows, rc0 + rows, rd0 + rows, e0 + prev - 1]
        v = [np.ones(n_pairs), -ETA * span / scale, span / (ETA * scale), -np.ones(len(prev))]
        b_eq = np.where(first, lp.e_init[lp.pair_class], 0.0)
        # Balance per block: Σ (D - C) - up + dn = target.
        bal = n_pairs + lp.pair_block
        blk = np.arange(n_blocks)
        r += [bal, bal, n_pairs + blk, n_pairs + blk]
        c += [rd0 + rows, rc0 + rows, up0 + blk, dn0 + blk]
        v += [np.ones(n_pairs), -np.ones(n_pairs), -np.ones(n_blocks), np.ones(n_blocks)]
        n_eq = n_pairs + n_blocks
        # Fairness: per class Σ span·D/scale - zd <= 0 and Σ span·C/scale - zc <= 0.
        share = span / scale
        r += [n_eq + lp.pair_class, n_eq + k_count + lp.pair_class, n_eq + np.arange(2 * k_count)]
        c += [rd0 + rows, rc0 + rows, np.full(k_count, zd), np.full(k_count, zc)]
        v += [share, share, -np.ones(2 * k_count)]
        b_ub = [np.zeros(2 * k_count)]
        # Cuts: -Σ span·C over the class's pairs in the cut's blocks <= -kWh.
        offsets = np.searchsorted(lp.pair_class, np.arange(k_count + 1))
        row = n_eq + 2 * k_count
        for k, cut_blocks, kwh in lp.cuts:
            sel = offsets[k] + np.flatnonzero(np.isin(lp.pair_block[offsets[k] : offsets[k + 1]], cut_blocks))
            r.append(np.full(len(sel), row))
            c.append(rc0 + sel)
            v.append(-span[sel])
            b_ub.append(np.array([-kwh]))
            row += 1
        if lp.one_way:
            both = np.flatnonzero((lp.cap_c > 0) & (lp.cap_d > 0))
            hull = row + np.arange(len(both))
            r += [hull, hull]
            c += [rc0 + both, rd0 + both]
            v += [1.0 / lp.cap_c[both], 1.0 / lp.cap_d[both]]
            b_ub.append(np.ones(len(both)))
        upper_ub = np.concatenate(b_ub)
        n_rows = n_eq + len(upper_ub)
        matrix = sparse.csc_matrix(
            (np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n_rows, n_cols)
        )
        model = highspy.HighsLp()
        model.num_col_, model.num_row_ = n_cols, n_rows
        model.col_cost_, model.col_lower_, model.col_upper_ = cost, lower, upper
        model.row_lower_ = np.concatenate((b_eq, target, np.full(len(upper_ub), -INF)))
        model.row_upper_ = np.concatenate((b_eq, target, upper_ub))
        model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        model.a_matrix_.start_ = matrix.indptr
        model.a_matrix_.index_ = matrix.indices
        model.a_matrix_.value_ = matrix.data
        self.highs = _highs()
        self.highs.setOptionValue("random_seed", 0)
        self.highs.passModel(model)

    def solve(
        self,
        time_limit_s: float | None,
        target: np.ndarray | None = None,
        share_floor: tuple[float, float] | None = None,
    ) -> _Solution:
        highs = self.highs
        if target is not None:
            rows = self.balance_rows
            highs.changeRowsBounds(len(rows), rows, target, target)
        if share_floor is not None:
            cols = np.array([self.zd, self.zc], dtype=np.int32)
            highs.changeColsBounds(2, cols, np.array(share_floor, dtype=float), np.full(2, INF))
        highs.setOptionValue("time_limit", INF if time_limit_s is None else max(float(time_limit_s), 0.01))
        highs.run()
        status = highs.getModelStatus()
        n = self.n_pairs
        if status != highspy.HighsModelStatus.kOptimal:
            kind = "time_limit" if status == highspy.HighsModelStatus.kTimeLimit else "failed"
            return _Solution(kind, np.zeros(n), np.zeros(n), math.inf, highs.modelStatusToString(status))
        x = np.asarray(highs.getSolution().col_value)
        objective = float(highs.getInfo().objective_function_value)
        return _Solution("optimal", x[:n], x[n : 2 * n], objective, "optimal")


def _solve(
    lp: _LP,
    blocks: _Blocks,
    target: np.ndarray,
    sign: np.ndarray,
    h: float,
    weights: ObjectiveWeights,
    mean_battery: float,
    time_limit_s: float | None,
    share_floor: tuple[float, float] = (0.0, 0.0),
) -> _Solution:
    return _Model(lp, blocks, target, sign, h, weights, mean_battery, share_floor).solve(time_limit_s)


def _both(sol: _Solution) -> np.ndarray:
    return np.minimum(sol.charge, sol.discharge) > 1e-7


def _solve_one_way(
    model: _Model,
    lp: _LP,
    blocks: _Blocks,
    target: np.ndarray,
    sign: np.ndarray,
    h: float,
    weights: ObjectiveWeights,
    mean_battery: float,
    time_limit_s: float | None,
    share_floor: tuple[float, float] = (0.0, 0.0),
    *,
    hull_first: bool = True,
) -> tuple[_Solution, float]:
    """Solve ``model`` (built from ``lp``, a set of classes of real vehicles) for
    ``target`` and ``share_floor``. A car cannot charge and discharge in the same slot;
    the LP can: doing both wastes energy, which it uses when a full fleet is asked to
    absorb more. Where an optimum does both, the LP is solved again with every pair in
    the hull of charging or discharging, C/cap_c + D/cap_d <= 1 (still a relaxation of
    what cars can do: its optimum, returned too, is a lower bound); where that still
    does both, the smaller side is fixed to zero and the LP solved again (up to
    ``ONE_WAY_RESOLVES`` times). Any plan left doing both is netted per slot and
    walked forward by ``_repair``. ``hull_first=False`` (when the bound is not needed)
    goes straight to fixing sides, in the hull."""
    sol = model.solve(time_limit_s, target, share_floor)
    bound = sol.objective
    hull = not hull_first
    for _ in range(ONE_WAY_RESOLVES + hull_first):
        both = _both(sol) if sol.status == "optimal" else None
        if both is None or not both.any():
            break
        if hull:  # fix the smaller side where the hull still mixes both
            lp = dataclasses.replace(
                lp,
                one_way=True,
                cap_c=np.where(both & (sol.charge < sol.discharge), 0.0, lp.cap_c),
                cap_d=np.where(both & (sol.charge >= sol.discharge), 0.0, lp.cap_d),
            )
        else:
            lp = dataclasses.replace(lp, one_way=True)
        again = _Model(lp, blocks, target, sign, h, weights, mean_battery, share_floor).solve(time_limit_s)
        if again.status != "optimal":  # out of time: netting the last one is still a valid plan
            break
        sol = again
        if not hull:
            bound, hull = sol.objective, True  # still a relaxation of what cars can do: a better bound
    return sol, bound


# --- exact classes: each vehicle's own constraints ----------------------------------


def _exact_lp(fleet: _Fleet, blocks: _Blocks, members: np.ndarray) -> tuple[_LP, list[np.ndarray]]:
    """The exact per-vehicle LP over ``members`` (sorted row indices). Vehicles equal
    in SoC terms (same windows and departure slots, SoCs, power per battery kWh) share
    one class, their power split in proportion to their batteries: each keeps the
    class's SoC trajectory from its own start, and by symmetry of the LP the equal
    split loses nothing."""
    groups: dict[tuple, list[int]] = {}
    for i in members.tolist():
        b = fleet.battery[i]
        key = (
            fleet.windows[i],
            fleet.targets[i],
            float(fleet.soc0[i]),
            float(fleet.floor[i]),
            float(fleet.max_c[i] / b),
            float(fleet.max_d[i] / b),
        )
        groups.setdefault(key, []).append(i)
    classes = [np.array(g) for g in groups.values()]  # dict order: by first member
    block_end = blocks.end
    parts: dict[str, list] = defaultdict(list)
    scale, init = [], []
    for k, mem in enumerate(classes):
        i = mem[0]
        battery = float(fleet.battery[mem].sum())
        plugged = np.flatnonzero(blocks.plugged[i])
        lo = np.full(len(plugged), fleet.floor[i] - fleet.soc0[i])
        hi = np.full(len(plugged), 1.0 - fleet.soc0[i])
        for slot, soc in fleet.targets[i]:
            j = int(np.searchsorted(block_end[plugged], slot, side="right")) - 1
            if j >= 0:
                lo[j] = min(max(lo[j], soc - fleet.soc0[i]), hi[j])
        parts["pair_class"].append(np.full(len(plugged), k))
        parts["pair_block"].append(plugged)
        parts["cap_c"].append(np.full(len(plugged), fleet.max_c[i] / fleet.battery[i] * battery))
        parts["cap_d"].append(np.full(len(plugged), fleet.max_d[i] / fleet.battery[i] * battery))
        parts["e_lo"].append(lo)
        parts["e_hi"].append(hi)
        scale.append(battery)
        init.append(0.0)
    return _lp_from(parts, scale, init), classes


def _lp_from(parts: dict[str, list], scale: list[float], init: list[float]) -> _LP:
    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate(parts[name]).astype(dtype) if parts[name] else np.zeros(0, dtype=dtype)

    return _LP(
        pair_class=cat("pair_class", np.int64),
        pair_block=cat("pair_block", np.int64),
        cap_c=cat("cap_c", float),
        cap_d=cat("cap_d", float),
        e_lo=cat("e_lo", float),
        e_hi=cat("e_hi", float),
        scale=np.array(scale, dtype=float),
        e_init=np.array(init, dtype=float),
    )


def _exact_power(
    fleet: _Fleet, blocks: _Blocks, lp: _LP, classes: list[np.ndarray], sol: _Solution
) -> np.ndarray:
    """Per vehicle (of the classes) and block, kW."""
    power = np.zeros((len(fleet.ids), len(blocks.start)))
    net = sol.discharge - sol.charge
    share = [fleet.battery[mem] / lp.scale[k] for k, mem in enumerate(classes)]
    for k, mem in enumerate(classes):
        sel = lp.pair_class == k
        power[np.ix_(mem, lp.pair_block[sel])] = np.outer(share[k], net[sel])
    return power


# --- relaxation: groups as one battery (a lower bound) -------------------------------


def _relaxed_lp(
    fleet: _Fleet, blocks: _Blocks, groups: list[np.ndarray], target_b: np.ndarray, h: float
) -> _LP:
    """Each group as one battery: the sums of its members' power limits (of those
    plugged in) and of their energy bounds. Every constraint is a sum of members'
    constraints, so any per-vehicle plan is feasible here with the same cost: its
    optimum is a lower bound on the exact one (and equal for a group of one). The sums
    let a member's surplus stand in for another's lack; cuts on each member's own
    departure charging take most of that back."""
    low, high = _energy_bounds(fleet, blocks)
    parts: dict[str, list] = defaultdict(list)
    scale, init = [], []
    for k, mem in enumerate(groups):
        battery = float(fleet.battery[mem].sum())
        plugged_m = blocks.plugged[mem]
        plugged = np.flatnonzero(plugged_m.any(axis=0))
        parts["pair_class"].append(np.full(len(plugged), k))
        parts["pair_block"].append(plugged)
        parts["cap_c"].append((plugged_m[:, plugged] * fleet.max_c[mem, None]).sum(axis=0))
        parts["cap_d"].append((plugged_m[:, plugged] * fleet.max_d[mem, None]).sum(axis=0))
        parts["e_lo"].append(low[mem][:, plugged].sum(axis=0) / battery)
        parts["e_hi"].append(high[mem][:, plugged].sum(axis=0) / battery)
        scale.append(battery)
        init.append(float((fleet.soc0[mem] * fleet.battery[mem]).sum()) / battery)
    lp = _lp_from(parts, scale, init)
    # Each member charges, before each of its departures, at least what it lacks for
    # it, (target - start SoC)·battery/η from the grid, whatever the others hold; and
    # at least that less what its own power can charge in the blocks with a charging
    # target, in the others.
    hours = blocks.length * h
    charging = target_b < 0
    cuts = []
    for k, mem in enumerate(groups):
        for slot in sorted({slot for i in mem for slot, _ in fleet.targets[i]}):
            before = blocks.end <= slot
            lack_all = lack_rest = 0.0
            for i in mem:
                need = max((soc for t, soc in fleet.targets[i] if t <= slot), default=0.0) - fleet.soc0[i]
                need_kwh = max(need, 0.0) * fleet.battery[i] / ETA
                lack_all += need_kwh
                lack_rest += max(
                    0.0, need_kwh - fleet.max_c[i] * hours[blocks.plugged[i] & before & charging].sum()
                )
            for blks, kwh in ((before, lack_all), (before & ~charging, lack_rest)):
                if kwh > 1e-9:
                    cuts.append((k, np.flatnonzero(blks), kwh * (1 - 1e-9)))
    return dataclasses.replace(lp, cuts=cuts)


def _energy_bounds(fleet: _Fleet, blocks: _Blocks) -> tuple[np.ndarray, np.ndarray]:
    """kWh each vehicle holds at least / at most at each block end (V, NB): its start
    energy until it first plugs in, then floor..battery, and at least a departure
    target from that departure until it plugs in again."""
    battery = fleet.battery[:, None]
    end = blocks.end[None, :]
    n_slots = fleet.plugged.shape[1]
    any_plug = fleet.plugged.any(axis=1)
    first = np.where(any_plug, fleet.plugged.argmax(axis=1), n_slots)[:, None]
    before = end <= first
    e0 = (fleet.soc0 * fleet.battery)[:, None]
    low = np.where(before, e0, fleet.floor[:, None] * battery)
    high = np.where(before, e0, np.broadcast_to(battery, low.shape))
    for i, targets in enumerate(fleet.targets):
        for slot, soc in targets:
            later = np.flatnonzero(fleet.plugged[i, slot:])
            back = slot + int(later[0]) if len(later) else n_slots
            held = (blocks.end >= slot) & (blocks.end <= back)
            low[i, held] = np.maximum(low[i, held], soc * fleet.battery[i])
    return low, np.maximum(high, low)


def _relaxed_power(blocks: _Blocks, lp: _LP, sol: _Solution, n_groups: int) -> np.ndarray:
    """Net kW per group and block."""
    out = np.zeros((n_groups, len(blocks.start)))
    np.add.at(out, (lp.pair_class, lp.pair_block), sol.discharge - sol.charge)
    return out


def _signature(fleet: _Fleet, i: int) -> tuple:
    return fleet.windows[i], tuple(slot for slot, _ in fleet.targets[i])


def _groups(fleet: _Fleet, count_max: int, size_max: int) -> list[np.ndarray]:
    """Vehicles in runs of similar ones (same windows and departure slots, then by
    power per kWh and start SoC), at most ``size_max`` a run; beyond ``count_max``
    runs, neighbouring runs merge (mixing windows: still a lower bound, looser), in
    an order that keeps windows within four slots of each other together first."""
    order = sorted(
        range(len(fleet.ids)),
        key=lambda i: (
            tuple((start // 4, end // 4) for start, end in fleet.windows[i]),  # merged runs stay close
            _signature(fleet, i),
            float(fleet.max_d[i] / fleet.battery[i]),
            float(fleet.max_c[i] / fleet.battery[i]),
            float(fleet.soc0[i]),
            i,
        ),
    )
    runs: list[list[int]] = []
    for i in order:
        if not runs or len(runs[-1]) >= size_max or _signature(fleet, i) != _signature(fleet, runs[-1][0]):
            runs.append([])
        runs[-1].append(i)
    if len(runs) > count_max:
        size = math.ceil(len(order) / count_max)
        merged: list[list[int]] = []
        for run in runs:
            if not merged or len(merged[-1]) + len(run) > size:
                merged.append([])
            merged[-1].extend(run)
        runs = merged
    return [np.array(run) for run in runs]


# --- from class rates to a checked per-vehicle plan -------------------------------


def _to_slots(blocks: _Blocks, power_b: np.ndarray) -> np.ndarray:
    return np.repeat(power_b, blocks.length, axis=1)


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


ONE_WAY_RESOLVES = 1  # LPs solved again at most to stop a car charging and discharging at once
# Above this many (class, block) pairs the exact LP gives way to the two-stage plan.
EXACT_MAX_PAIRS = 60_000
GROUP_SIZE = 5  # vehicles per battery of the relaxation (smaller: tighter bound, bigger LP)
GROUP_COUNT = 3_000  # batteries of the relaxation at most
RELAX_MAX_PAIRS = 40_000  # and fewer when vehicles are plugged in for many blocks
BATCH_SIZE = 400  # vehicles per exact LP of the second stage
SWEEPS = 3  # passes over the batches at most (each can only lower the objective)


def generate_plan(inp: PlanInput, *, time_limit_s: float | None = None) -> PlanResult:
    """Plan every vehicle's power per slot to meet ``inp.target_kw`` as closely as possible.

    Small fleets: one exact LP (status ``"optimal"``, gap 0). Large ones (more than
    ``EXACT_MAX_PAIRS`` pairs of vehicle class and time block): two stages.
    First a relaxation where runs of similar vehicles act as one battery, whose
    optimum is a proven lower bound and gives each run a power profile; then exact
    per-vehicle LPs over batches of vehicles, each meeting the target minus what the
    other batches plan (at first, the relaxation's profiles), repeated while it
    improves. Every vehicle is planned by an exact LP of its own constraints, so the
    guarantees hold; the gap to the lower bound is reported (status ``"feasible"``
    when above 1e-6).

    Deterministic: vehicles are sorted by id and every LP is built in that order.
    Bad input is not raised: the result has status ``"infeasible_input"``, no
    entries, the whole target as shortfall and the problems in ``messages``.
    ``time_limit_s`` bounds the solver time; on expiry the best plan so far (or the
    safe one: departure charging only) is returned with status ``"feasible"``.
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
    h = inp.slot_minutes / 60
    w = inp.weights
    blocks = _blocks(fleet, target)
    target_b = target[blocks.start]
    sign_b = np.sign(target_b)
    mean_battery = float(fleet.battery.mean()) if len(fleet.ids) else 0.0
    messages = list(fleet.messages)

    def remaining() -> float | None:
        return None if time_limit_s is None else time_limit_s - (time.perf_counter() - started)

    def finish(power: np.ndarray, lower_bound: float, classes: int) -> PlanResult:
        power = _repair(fleet, power, h)
        objective = _objective(fleet, power, target, h, w)
        gap = max(0.0, (objective - lower_bound) / max(abs(objective), 1e-9))
        gap = 0.0 if gap <= 1e-9 else gap  # rounding of an exact optimum
        status = "optimal" if gap <= 1e-6 else "feasible"
        return _result(
            inp, fleet, power, status=status, gap=gap, lower_bound=lower_bound,
            started=started, classes=classes, messages=messages,
        )  # fmt: skip

    def fallback(why: str) -> PlanResult:
        messages.append(f"{why}; fallback plan: departure charging only")
        power = _repair(fleet, _fallback(fleet, h), h)
        return _result(
            inp, fleet, power, status="feasible", gap=None, lower_bound=None,
            started=started, classes=0, messages=messages,
        )  # fmt: skip

    left = remaining()
    if left is not None and left <= 0:
        return fallback("no time left to plan")
    everyone = np.arange(len(fleet.ids))
    lp, classes = _exact_lp(fleet, blocks, everyone)
    if len(lp.pair_class) <= EXACT_MAX_PAIRS:
        model = _Model(lp, blocks, target_b, sign_b, h, w, mean_battery)
        sol, bound = _solve_one_way(model, lp, blocks, target_b, sign_b, h, w, mean_battery, remaining())
        if sol.status != "optimal":
            return fallback(f"LP not solved ({sol.message})")
        power = _to_slots(blocks, _exact_power(fleet, blocks, lp, classes, sol))
        return finish(power, bound, len(classes))

    # Stage 1: the relaxation (lower bound, a profile per group).
    per_vehicle = float(blocks.plugged.sum()) / max(len(fleet.ids), 1)  # plugged blocks
    groups = _groups(
        fleet, max(1, min(GROUP_COUNT, int(RELAX_MAX_PAIRS / max(per_vehicle, 1.0)))), GROUP_SIZE
    )
    relaxed = _relaxed_lp(fleet, blocks, groups, target_b, h)
    rsol = _solve(relaxed, blocks, target_b, sign_b, h, w, mean_battery, remaining())
    if rsol.status != "optimal":
        return fallback(f"relaxed LP not solved ({rsol.message})")
    profile = _relaxed_power(blocks, relaxed, rsol, len(groups))
    # Stage 2: exact LPs over batches of whole groups, Gauss-Seidel over the batches.
    batches: list[tuple[np.ndarray, list[int]]] = []
    for g, mem in enumerate(groups):
        if not batches or len(batches[-1][0]) + len(mem) > BATCH_SIZE:
            batches.append((np.zeros(0, dtype=np.int64), []))
        batches[-1] = (np.concatenate((batches[-1][0], mem)), [*batches[-1][1], g])
    batches = [(np.sort(mem), gs) for mem, gs in batches]
    contrib = np.array([profile[gs].sum(axis=0) for _, gs in batches])  # net kW per batch and block
    power_b = np.zeros((len(fleet.ids), len(blocks.start)))
    planned = np.zeros(len(batches), dtype=bool)
    span = blocks.length * h
    best = math.inf
    n_classes = 0
    inputs: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}  # per batch, at its last solve
    models: dict[int, tuple[_LP, list[np.ndarray], _Model]] = {}
    tol_kw = 1e-7 * max(1.0, float(np.abs(target_b).max(initial=0.0)))
    for sweep in range(SWEEPS):
        solved = 0
        for k, (mem, _) in enumerate(batches):
            left = remaining()
            if left is not None and left <= 0:
                break
            others = np.ones(len(fleet.ids), dtype=bool)
            others[mem] = False
            shares = (
                float((np.maximum(power_b[others], 0.0) @ span / fleet.battery[others]).max(initial=0.0)),
                float((np.maximum(-power_b[others], 0.0) @ span / fleet.battery[others]).max(initial=0.0)),
            )
            residual = target_b - (contrib.sum(axis=0) - contrib[k])
            last = inputs.get(k)
            if last is not None and np.abs(last[0] - residual).max() <= tol_kw and last[1] == shares:
                continue  # the same LP as last time: the same plan
            inputs[k] = (residual, shares)
            solved += 1
            if k not in models:  # later sweeps start from the last basis: only the target and floors move
                lp, classes = _exact_lp(fleet, blocks, mem)
                models[k] = (lp, classes, _Model(lp, blocks, residual, sign_b, h, w, mean_battery))
            lp, classes, model = models[k]
            sol, bound = _solve_one_way(
                model, lp, blocks, residual, sign_b, h, w, mean_battery, left, shares, hull_first=False
            )
            if sol.status != "optimal":
                continue  # this batch keeps its previous plan (or none yet)
            batch_power = _exact_power(fleet, blocks, lp, classes, sol)[mem]
            if planned[k] and sol.objective > bound:
                # Solved again to stop charging and discharging at once, it may have lost to
                # the plan it replaces (which the plain LP could only improve on).
                before = _objective(fleet, _to_slots(blocks, power_b), target, h, w)
                kept = power_b[mem].copy()
                power_b[mem] = batch_power
                if _objective(fleet, _to_slots(blocks, power_b), target, h, w) > before:
                    power_b[mem] = kept
                    continue
            power_b[mem] = batch_power
            contrib[k] = batch_power.sum(axis=0)
            planned[k] = True
            if sweep == 0:
                n_classes += len(classes)
        value = _objective(fleet, _to_slots(blocks, power_b), target, h, w)
        done = (
            not solved or value >= best - 1e-9 * max(1.0, abs(best)) or value - rsol.objective <= 1e-6 * value
        )
        best = min(best, value)
        left = remaining()
        if done or not planned.all() or (left is not None and left <= 0):
            break
    power = _to_slots(blocks, power_b)
    if not planned.all():
        late_count = int((~planned).sum())
        messages.append(f"time limit: {late_count} of {len(batches)} batches get departure charging only")
        late = np.concatenate([mem for k, (mem, _) in enumerate(batches) if not planned[k]])
        power[late] = _fallback(fleet, h)[late]
    return finish(power, rsol.objective, n_classes)


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
