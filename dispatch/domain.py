"""Pure dispatch logic: vehicle filter, allocation strategies and fallbacks.

No Django, Celery or paho here (DESIGN.md, "Inside an app"): callers turn
database rows into :class:`VehicleState`, the dispatch config into a
:class:`Policy`, and store the :class:`Allocation` they get back.

Conventions (SPEC §2):

- ``power_kw > 0`` is discharge / injection to the grid, ``< 0`` is charging.
  Every setpoint has the sign of the request it serves.
- ``soc`` is a fraction 0-1.
- Limits (:func:`vehicle_limit_kw`, the ``limits`` arguments of the strategies)
  are non-negative magnitudes in kW.
- Setpoints are rounded to 0.001 kW (1 W) with largest-remainder rounding, so
  their sum never exceeds the request and no vehicle goes above its limit;
  zero setpoints are dropped.
- Results never depend on the order of the input vehicles: vehicles are
  processed in ``vehicle_id`` order and ties are broken by ``vehicle_id``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STRATEGIES = frozenset({"equal", "smart", "lp"})
FALLBACKS = frozenset({"noop", "balanced", "probabilistic"})
MIXED = "mixed"  # Allocation.strategy when segments used different strategies

RESOLUTION_KW = 0.001
_PER_KW = 1000  # setpoint units (W) per kW
# Float noise allowance when converting kW to whole watts: a limit computed as
# 2.4999999999999996 kW must still allow 2.5 kW.
_EPS_W = 1e-6
# Every smart/lp score is at least this, so a vehicle whose score terms are all
# zero can still absorb what better vehicles cannot (the request is covered
# whenever the fleet can cover it).
_MIN_SCORE = 0.01
# Priority only breaks ties: its bonus stays below 0.001 in absolute value.
_PRIORITY_BONUS = 0.001
# The lp objective trades 1 kW delivered against at most this much score cost,
# so delivering power always wins over choosing better vehicles.
_LP_COST = 1e-3


# --- inputs ------------------------------------------------------------------


@dataclass(frozen=True)
class VehicleState:
    """What dispatch knows about one vehicle at decision time."""

    vehicle_id: str
    segment: str = ""
    is_v2g: bool = True
    active: bool = True
    available: bool = True  # plugged in, online, seen recently (computed by the caller)
    soc: float | None = None  # 0-1; None = unknown
    battery_kwh: float = 50.0
    max_charge_kw: float = 7.4
    max_discharge_kw: float = 7.4
    min_soc: float = 0.2  # the vehicle's own floor
    target_soc: float = 0.8
    # The SoC below which, at the signal's end, charging at full power could no
    # longer reach target_soc by the planned departure (departure_floor(); 0: none).
    departure_floor: float = 0.0
    priority: int = 0
    committed: bool = False  # held by an in-force command of *another* signal
    participation: float = 0.0  # recent participation count; higher = used more
    availability: float = 1.0  # forecast probability 0-1 that it stays plugged for the signal
    ack_rate: float = 1.0  # historical share of commands acked, 0-1


@dataclass(frozen=True)
class SignalSpec:
    """The part of a flexibility signal allocation needs."""

    signal_type: str
    power_kw: float  # signed, SPEC §2
    duration_s: float
    # Only these vehicles may take part (an operator's selection); None: any vehicle.
    vehicle_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.power_kw):
            raise ValueError(f"signal power_kw must be finite, got {self.power_kw!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"signal duration_s must be > 0, got {self.duration_s!r}")


@dataclass(frozen=True)
class SmartWeights:
    """Relative weights of the smart score terms (need not sum to 1)."""

    soc: float = 0.5
    availability: float = 0.3
    fairness: float = 0.2

    def __post_init__(self) -> None:
        for name in ("soc", "availability", "fairness"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"smart weight {name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class SegmentPolicy:
    """Per-segment overrides; None = use the signal-type strategy / the policy's weights."""

    strategy: str | None = None
    weights: SmartWeights | None = None

    def __post_init__(self) -> None:
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {sorted(STRATEGIES)}")


@dataclass(frozen=True)
class Policy:
    """Dispatch settings (the ``dispatch`` config section, plus the balanced fallback threshold)."""

    enable_soc_constraints: bool = True
    min_soc: float = 0.2  # fleet-wide floor
    safe_discharge_floor: float = 0.3  # never discharge below this
    default_strategy: str = "equal"
    strategies: Mapping[str, str] = field(default_factory=dict)  # signal type -> strategy
    lp_first: frozenset[str] = frozenset()  # signal types that try lp first, smart if lp fails
    smart_weights: SmartWeights = SmartWeights()
    segments: Mapping[str, SegmentPolicy] = field(default_factory=dict)
    fallback: str = "balanced"
    balanced_min_soc: float = 0.3  # see fallback_allocate

    def __post_init__(self) -> None:
        # Accept any iterable for lp_first (config gives a list) but keep the field hashable.
        object.__setattr__(self, "lp_first", frozenset(self.lp_first))
        for name in ("min_soc", "safe_discharge_floor", "balanced_min_soc"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a fraction 0-1, got {value!r}")
        for where, name in [("default_strategy", self.default_strategy)] + [
            (f"strategies[{k}]", v) for k, v in self.strategies.items()
        ]:
            if name not in STRATEGIES:
                raise ValueError(f"{where}: unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
        for segment, seg in self.segments.items():
            if not isinstance(seg, SegmentPolicy):
                raise TypeError(f"segments[{segment}] must be a SegmentPolicy, got {type(seg).__name__}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {self.fallback!r}; expected one of {sorted(FALLBACKS)}")

    def weights_for(self, segment: str) -> SmartWeights:
        seg = self.segments.get(segment)
        return seg.weights if seg is not None and seg.weights is not None else self.smart_weights


def policy_from_config(dispatch: Mapping[str, Any], *, balanced_min_soc: float = 0.3) -> Policy:
    """Build a :class:`Policy` from the ``dispatch`` config section as a plain mapping
    (e.g. ``config.dispatch.model_dump()``); keys it does not use are ignored."""

    def weights(raw: Mapping[str, Any] | None) -> SmartWeights | None:
        return None if raw is None else SmartWeights(**{k: float(v) for k, v in raw.items()})

    segments = {
        name: SegmentPolicy(strategy=(raw or {}).get("strategy"), weights=weights((raw or {}).get("weights")))
        for name, raw in (dispatch.get("segments") or {}).items()
    }
    return Policy(
        enable_soc_constraints=bool(dispatch.get("enable_soc_constraints", True)),
        min_soc=float(dispatch.get("min_soc", 0.2)),
        safe_discharge_floor=float(dispatch.get("safe_discharge_floor", 0.3)),
        default_strategy=dispatch.get("default_strategy", "equal"),
        strategies=dict(dispatch.get("strategies") or {}),
        lp_first=frozenset(dispatch.get("lp_first") or ()),
        smart_weights=weights(dispatch.get("smart_weights")) or SmartWeights(),
        segments=segments,
        fallback=dispatch.get("fallback", "balanced"),
        balanced_min_soc=balanced_min_soc,
    )


# --- output ------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """The outcome of one allocation (or fallback round).

    ``setpoints_kw`` holds only non-zero setpoints, each with the sign of the
    request. ``scores`` holds the score of every vehicle the strategy
    considered (1.0 for equal). ``excluded`` says why the others were left out.
    ``strategy`` is the strategy actually used ("smart" when lp failed,
    ``"mixed"`` when segments used different strategies; ``segment_strategies``
    then says which segment used which). ``allocated_kw + unallocated_kw ==
    requested_kw``; a fleet that cannot cover the request leaves a non-zero
    ``unallocated_kw``.
    """

    setpoints_kw: dict[str, float]
    scores: dict[str, float]
    strategy: str
    requested_kw: float
    allocated_kw: float
    unallocated_kw: float
    excluded: dict[str, str]
    segment_strategies: dict[str, str] = field(default_factory=dict)


def _empty(strategy: str, requested_kw: float, excluded: dict[str, str] | None = None) -> Allocation:
    return Allocation({}, {}, strategy, requested_kw, 0.0, requested_kw, excluded or {})


# --- filter and limits ---------------------------------------------------------


def _discharging(signal: SignalSpec) -> bool:
    # A zero-power signal is treated as a discharge for filtering (the stricter
    # direction); allocate() never filters for one anyway.
    return signal.power_kw >= 0


CHARGE_EFFICIENCY = math.sqrt(0.87)  # one way (round trip ≈ 87 %, DOMAIN.md), as the planner


def departure_floor(
    *, target_soc: float, max_charge_kw: float, battery_kwh: float, hours_to_departure: float | None
) -> float:
    """The lowest SoC from which charging at full power still reaches ``target_soc``
    after ``hours_to_departure`` (0 when no departure is known). Drivers' departure
    targets are never given up for a grid signal (DOMAIN.md)."""
    if hours_to_departure is None or battery_kwh <= 0:
        return 0.0
    rise_per_h = max(0.0, max_charge_kw) * CHARGE_EFFICIENCY / battery_kwh
    return max(0.0, target_soc - rise_per_h * max(0.0, hours_to_departure))


def soc_floor(v: VehicleState, policy: Policy) -> float:
    """The SoC a discharge must not go below: the highest of the vehicle's own
    minimum, the fleet minimum, the safe-discharge floor and what its departure
    needs when SoC constraints are on, else the vehicle's own minimum."""
    if policy.enable_soc_constraints:
        return max(v.min_soc, policy.min_soc, policy.safe_discharge_floor, v.departure_floor)
    return v.min_soc


def vehicle_limit_kw(v: VehicleState, signal: SignalSpec, policy: Policy) -> float:
    """Power (kW, >= 0) the vehicle can sustain for the signal's whole duration
    in the signal's direction.

    Discharge: ``min(max_discharge_kw, (soc - floor) * battery_kwh * 3600 / duration_s)``;
    charge: ``min(max_charge_kw, (1 - soc) * battery_kwh * 3600 / duration_s)``.
    With SoC constraints off it is just the power rating (SoC may be unknown);
    with them on, an unknown SoC gives 0. Charger efficiency is not modelled.
    """
    discharge = _discharging(signal)
    rating = max(0.0, v.max_discharge_kw if discharge else v.max_charge_kw)
    if not policy.enable_soc_constraints:
        return rating
    if v.soc is None:
        return 0.0
    energy_kwh = (v.soc - soc_floor(v, policy) if discharge else 1.0 - v.soc) * v.battery_kwh
    return max(0.0, min(rating, energy_kwh * 3600.0 / signal.duration_s))


def _exclusion_reason(v: VehicleState, signal: SignalSpec, policy: Policy, limit: float) -> str | None:
    discharge = _discharging(signal)
    if signal.vehicle_ids is not None and v.vehicle_id not in signal.vehicle_ids:
        return "not among the signal's vehicles"
    if not v.active:
        return "inactive"
    if discharge and not v.is_v2g:
        return "not V2G capable"
    if not v.available:
        return "unavailable"
    if v.committed:
        return "committed to another signal"
    rating = v.max_discharge_kw if discharge else v.max_charge_kw
    if rating <= 0:
        return f"no {'discharge' if discharge else 'charge'} power rating"
    if policy.enable_soc_constraints:
        if v.soc is None:
            return "SoC unknown"
        if discharge:
            floor = soc_floor(v, policy)
            if v.soc <= floor:
                return f"SoC {v.soc:.2f} at or below floor {floor:.2f}"
        elif v.soc >= 1.0:
            return f"SoC {v.soc:.2f} full"
    if math.floor(limit * _PER_KW + _EPS_W) <= 0:
        return f"available power {limit:.4f} kW below {RESOLUTION_KW} kW over the signal's duration"
    return None


def vehicle_filter(
    vehicles: Iterable[VehicleState], signal: SignalSpec, policy: Policy
) -> tuple[list[VehicleState], dict[str, str]]:
    """Split vehicles into the eligible ones (in input order) and ``{vehicle_id: reason}``.

    Eligible: among the signal's ``vehicle_ids`` when it names some, active,
    V2G capable (discharge only), available, not committed to another signal,
    SoC known (when SoC constraints are on), above the SoC floor (discharge) or
    not full (charge), and able to take at least 0.001 kW for the whole duration.

    A charging signal (power < 0) does not require ``is_v2g``: any vehicle on a
    charger can absorb power, only injecting needs a bidirectional charger.

    Raises ValueError on duplicate vehicle ids (a caller bug: one vehicle would
    get two setpoints).
    """
    eligible: list[VehicleState] = []
    excluded: dict[str, str] = {}
    seen: set[str] = set()
    for v in vehicles:
        if v.vehicle_id in seen:
            raise ValueError(f"duplicate vehicle id {v.vehicle_id!r}")
        seen.add(v.vehicle_id)
        reason = _exclusion_reason(v, signal, policy, vehicle_limit_kw(v, signal, policy))
        if reason is None:
            eligible.append(v)
        else:
            excluded[v.vehicle_id] = reason
    return eligible, excluded


def strategy_for(signal_type: str, segment: str, policy: Policy) -> str:
    """Strategy for vehicles of ``segment`` under a ``signal_type`` signal.

    Precedence: the segment's own strategy, then ``lp`` when the signal type is
    in ``lp_first``, then ``strategies[signal_type]``, then ``default_strategy``.
    """
    seg = policy.segments.get(segment)
    if seg is not None and seg.strategy is not None:
        return seg.strategy
    if signal_type in policy.lp_first:
        return "lp"
    return policy.strategies.get(signal_type, policy.default_strategy)


# --- numeric kernels (magnitudes, numpy arrays) -----------------------------------


def _water_fill(request: float, limits: np.ndarray) -> np.ndarray:
    """Equal split of ``request`` capped at each limit, the remainder re-split:
    ``x_i = min(L_i, level)``. O(n log n)."""
    n = limits.size
    if n == 0 or request <= 0:
        return np.zeros(n)
    if request >= limits.sum():
        return limits.copy()
    ordered = np.sort(limits)
    before = np.concatenate(([0.0], np.cumsum(ordered)[:-1]))
    # share[k]: equal level if the k smallest vehicles are saturated
    share = (request - before) / (n - np.arange(n))
    k = int(np.argmax(ordered > share))
    return np.minimum(limits, share[k])


def _weighted_fill(request: float, limits: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Split ``request`` in proportion to score * limit, capped at each limit,
    the remainder re-split until done: ``x_i = min(L_i, lam * s_i * L_i)``.

    Higher scores saturate first, so sorting by score gives the level in O(n log n)
    (same idea as water-filling; scores must be > 0)."""
    n = limits.size
    if n == 0 or request <= 0:
        return np.zeros(n)
    if request >= limits.sum():
        return limits.copy()
    order = np.argsort(-scores, kind="stable")
    lim = limits[order]
    sc = scores[order]
    w = sc * lim
    before = np.concatenate(([0.0], np.cumsum(lim)[:-1]))
    tail = np.cumsum(w[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (request - before) / tail
    ok = (lam * sc <= 1.0) & (tail > 0)
    k = int(np.argmax(ok))
    out = np.empty(n)
    out[order] = np.minimum(lim, lam[k] * w)
    return out


def _to_watts(x: np.ndarray, caps: np.ndarray, request: float) -> np.ndarray:
    """Round magnitudes (kW) to whole watts (int64) by largest remainder: the
    total is the rounded raw total but never above ``request``; nobody goes
    above its cap; ties go to the lower index (inputs are in vehicle_id order)."""
    caps_w = np.maximum(np.floor(caps * _PER_KW + _EPS_W), 0).astype(np.int64)
    xw = np.maximum(x, 0.0) * _PER_KW
    base = np.minimum(np.floor(xw + _EPS_W).astype(np.int64), caps_w)
    target = min(round(float(xw.sum())), math.floor(request * _PER_KW + _EPS_W), int(caps_w.sum()))
    extra = target - int(base.sum())
    if extra != 0:
        frac = xw - base
        if extra > 0:
            idx = np.flatnonzero(base < caps_w)
            pick = idx[np.argsort(-frac[idx], kind="stable")][:extra]
            base[pick] += 1
        else:
            idx = np.flatnonzero(base > 0)
            pick = idx[np.argsort(frac[idx], kind="stable")][:-extra]
            base[pick] -= 1
    return base


def _setpoints(ids: Sequence[str], watts: np.ndarray, sign: float) -> dict[str, float]:
    nz = np.flatnonzero(watts)
    values = (watts[nz] * sign / _PER_KW).tolist()
    return {ids[i]: round(val, 3) for i, val in zip(nz.tolist(), values, strict=True)}


def _sign(power_kw: float) -> float:
    return 1.0 if power_kw > 0 else -1.0 if power_kw < 0 else 0.0


# --- scores --------------------------------------------------------------------


def _soc_headroom(v: VehicleState, discharge: bool, floor: float) -> float:
    """0-1: how much room the SoC leaves in the signal's direction (0.5 when unknown)."""
    if v.soc is None:
        return 0.5
    if discharge:
        return min(1.0, max(0.0, (v.soc - floor) / (1.0 - floor))) if floor < 1.0 else 0.0
    return min(1.0, max(0.0, 1.0 - v.soc))


def vehicle_score(v: VehicleState, discharge: bool, floor: float, weights: SmartWeights) -> float:
    """Smart score, in (0, ~1]: the weighted mean of SoC headroom (discharge:
    ``(soc - floor) / (1 - floor)``; charge: ``1 - soc``), availability forecast
    and fairness ``1 / (1 + participation)``, squeezed to [0.01, 1], plus a
    priority tie-break bonus below 0.001."""
    total = weights.soc + weights.availability + weights.fairness
    if total > 0:
        base = (
            weights.soc * _soc_headroom(v, discharge, floor)
            + weights.availability * min(1.0, max(0.0, v.availability))
            + weights.fairness / (1.0 + max(0.0, v.participation))
        ) / total
    else:
        base = 1.0
    bonus = _PRIORITY_BONUS * v.priority / (1.0 + abs(v.priority))
    return _MIN_SCORE + (1.0 - _MIN_SCORE) * base + bonus


def _prepare(
    request_kw: float,
    vehicles: Sequence[VehicleState],
    limits: Mapping[str, float],
    weights: SmartWeights,
    policy: Policy | None,
    scores: Mapping[str, float] | None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Vehicles sorted by id with their limits and scores."""
    discharge = request_kw >= 0
    ordered = sorted(vehicles, key=lambda v: v.vehicle_id)
    ids = [v.vehicle_id for v in ordered]
    lim = np.array([max(0.0, float(limits.get(i, 0.0))) for i in ids], dtype=float)
    if scores is not None:
        sc = [max(_MIN_SCORE / 10, float(scores[i])) for i in ids]
    else:
        sc = [
            vehicle_score(v, discharge, soc_floor(v, policy) if policy else v.min_soc, weights)
            for v in ordered
        ]
    return ids, lim, np.array(sc, dtype=float)


# --- strategies (signed request, limits as magnitudes) ----------------------------


def allocate_equal(request_kw: float, limits: Mapping[str, float]) -> dict[str, float]:
    """Equal split of ``request_kw`` over ``limits`` (vehicle_id -> kW >= 0),
    capped at each limit, the remainder re-split (water-filling). Signed like
    the request, rounded to 0.001 kW, zeros dropped."""
    ids = sorted(limits)
    lim = np.array([max(0.0, float(limits[i])) for i in ids], dtype=float)
    magnitude = abs(request_kw)
    watts = _to_watts(_water_fill(magnitude, lim), lim, magnitude)
    return _setpoints(ids, watts, _sign(request_kw))


def allocate_smart(
    request_kw: float,
    vehicles: Sequence[VehicleState],
    limits: Mapping[str, float],
    weights: SmartWeights,
    *,
    policy: Policy | None = None,
    scores: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Score-weighted split: proportional to score * limit, capped, the
    remainder re-split until the request or every limit is reached.

    Scores come from :func:`vehicle_score` with ``weights`` (the SoC floor is
    ``soc_floor(v, policy)`` when a policy is given, else ``v.min_soc``), or
    from ``scores`` when given. Returns (setpoints, scores)."""
    ids, lim, sc = _prepare(request_kw, vehicles, limits, weights, policy, scores)
    magnitude = abs(request_kw)
    watts = _to_watts(_weighted_fill(magnitude, lim, sc), lim, magnitude)
    return _setpoints(ids, watts, _sign(request_kw)), {
        vid: round(score, 6) for vid, score in zip(ids, sc.tolist(), strict=True)
    }


def _lp_solve(request: float, limits: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    try:
        # imported here: scipy.optimize is slow to import and only lp needs it
        from scipy.optimize import linprog
    except ImportError:
        return None
    n = limits.size
    if n == 0 or request <= 0:
        return np.zeros(n)
    # maximise sum(x) - eps * sum((1 - s/max s) * x): all the power that can be
    # delivered (up to the request), from the best-scored vehicles first.
    cost = 1.0 - scores / scores.max()
    c = -(1.0 - _LP_COST * cost)
    try:
        res = linprog(
            c,
            A_ub=np.ones((1, n)),
            b_ub=np.array([request]),
            bounds=np.column_stack((np.zeros(n), limits)),
            method="highs",
        )
    except (ValueError, RuntimeError, ArithmeticError):
        return None
    if res.status != 0 or res.x is None:
        return None
    return np.clip(res.x, 0.0, limits)


def allocate_lp(
    request_kw: float,
    vehicles: Sequence[VehicleState],
    limits: Mapping[str, float],
    weights: SmartWeights,
    *,
    policy: Policy | None = None,
    scores: Mapping[str, float] | None = None,
) -> dict[str, float] | None:
    """Optimal allocation by linear programme (scipy ``linprog``, HiGHS).

    Maximises the delivered power (up to the request) minus a small cost that
    favours vehicles with high smart scores (the score already holds SoC,
    availability and low participation); bounds 0..limit per vehicle. The
    optimum fills the best-scored vehicles first. Returns signed setpoints
    rounded to 0.001 kW, or None when scipy is missing or the solver fails, so
    the caller can fall back to smart."""
    ids, lim, sc = _prepare(request_kw, vehicles, limits, weights, policy, scores)
    magnitude = abs(request_kw)
    x = _lp_solve(magnitude, lim, sc)
    if x is None:
        return None
    return _setpoints(ids, _to_watts(x, lim, magnitude), _sign(request_kw))


# --- allocate --------------------------------------------------------------------


def allocate(
    signal: SignalSpec,
    vehicles: Sequence[VehicleState],
    policy: Policy,
    *,
    strategy: str | None = None,
) -> Allocation:
    """Filter the vehicles, then split the signal's power among them.

    A zero-power signal gives an empty allocation (nothing to send). The
    strategy is ``strategy`` when given (for every segment), else chosen per
    segment by :func:`strategy_for`. When the eligible vehicles' segments use
    different strategies, the request is split across segments in proportion
    to their total limits, each segment is allocated with its own strategy
    (and weights), and any segment remainder is re-split equally over the
    other vehicles' headroom. lp that returns None falls back to smart. Smart
    scores always use each vehicle's segment weights.
    """
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {sorted(STRATEGIES)}")
    requested = float(signal.power_kw)
    if requested == 0:
        return _empty(strategy or strategy_for(signal.signal_type, "", policy), 0.0)

    eligible, excluded = vehicle_filter(vehicles, signal, policy)
    eligible.sort(key=lambda v: v.vehicle_id)
    sign = _sign(requested)
    discharge = sign > 0
    magnitude = abs(requested)
    ids = [v.vehicle_id for v in eligible]
    lim = np.array([vehicle_limit_kw(v, signal, policy) for v in eligible], dtype=float)

    by_segment: dict[str, list[int]] = {}
    for i, v in enumerate(eligible):
        by_segment.setdefault(v.segment, []).append(i)
    seg_strategy = {
        seg: strategy or strategy_for(signal.signal_type, seg, policy) for seg in sorted(by_segment)
    }
    if not eligible:
        return _empty(strategy or strategy_for(signal.signal_type, "", policy), requested, excluded)

    scores = np.ones(len(eligible))
    if any(s != "equal" for s in seg_strategy.values()):
        weights = {seg: policy.weights_for(seg) for seg in by_segment}
        scores = np.array(
            [vehicle_score(v, discharge, soc_floor(v, policy), weights[v.segment]) for v in eligible]
        )

    def run(name: str, request: float, idx: np.ndarray) -> tuple[np.ndarray, str]:
        if name == "equal":
            return _water_fill(request, lim[idx]), "equal"
        if name == "lp":
            group = [eligible[i] for i in idx.tolist()]
            result = allocate_lp(
                sign * request,
                group,
                {ids[i]: lim[i] for i in idx.tolist()},
                policy.smart_weights,
                policy=policy,
                scores={ids[i]: scores[i] for i in idx.tolist()},
            )
            if result is not None:
                return np.array([abs(result.get(ids[i], 0.0)) for i in idx.tolist()]), "lp"
        return _weighted_fill(request, lim[idx], scores[idx]), "smart"

    x = np.zeros(len(eligible))
    used: dict[str, str] = {}
    if len(set(seg_strategy.values())) == 1:
        name = next(iter(seg_strategy.values()))
        x, actual = run(name, magnitude, np.arange(len(eligible)))
        used = dict.fromkeys(seg_strategy, actual)
    else:
        total = float(lim.sum())
        for seg, members in by_segment.items():
            idx = np.array(members)
            share = magnitude * float(lim[idx].sum()) / total
            x[idx], used[seg] = run(seg_strategy[seg], share, idx)
    # What a segment (or an lp solution short by the solver's tolerance) left
    # over goes equally to whoever still has headroom.
    remainder = magnitude - float(x.sum())
    if remainder > _EPS_W / _PER_KW:
        x += _water_fill(remainder, np.maximum(lim - x, 0.0))
    for seg, actual in used.items():
        if actual == "equal":
            scores[by_segment[seg]] = 1.0

    watts = _to_watts(x, lim, magnitude)
    setpoints = _setpoints(ids, watts, sign)
    allocated = sign * int(watts.sum()) / _PER_KW
    distinct = set(used.values())
    return Allocation(
        setpoints_kw=setpoints,
        scores={vid: round(sc, 6) for vid, sc in zip(ids, scores.tolist(), strict=True)},
        strategy=distinct.pop() if len(distinct) == 1 else MIXED,
        requested_kw=requested,
        allocated_kw=allocated,
        unallocated_kw=_unallocated(requested, allocated),
        excluded=excluded,
        segment_strategies=dict(sorted(used.items())),
    )


PLANNED = "planned"  # Allocation.strategy of allocate_planned


def allocate_planned(
    signal: SignalSpec,
    vehicles: Sequence[VehicleState],
    policy: Policy,
    setpoints_kw: Mapping[str, float],
) -> Allocation:
    """The setpoints of a plan (a day-ahead NEBEF plan names each vehicle and
    its power), checked against the vehicles as they are now instead of chosen
    by a strategy.

    Each planned vehicle goes through the same checks as in
    :func:`vehicle_filter`, in the direction of its own setpoint (a plan may
    charge some vehicles while others discharge), and its setpoint is capped
    at :func:`vehicle_limit_kw` for the signal's duration. A planned vehicle
    that is absent from ``vehicles`` (inactive, another fleet, unknown) or not
    eligible now is excluded with the reason; what it was to deliver stays
    unallocated, for the fallback rounds to re-dispatch. Vehicles that the
    plan does not name get nothing and are not listed. Setpoints are rounded
    to 0.001 kW towards zero; zero setpoints are dropped. ``allocated_kw`` is
    the net (signed) sum of the setpoints kept.
    """
    by_id: dict[str, VehicleState] = {}
    for v in vehicles:
        if v.vehicle_id in by_id:
            raise ValueError(f"duplicate vehicle id {v.vehicle_id!r}")
        by_id[v.vehicle_id] = v
    setpoints: dict[str, float] = {}
    excluded: dict[str, str] = {}
    allocated_w = 0
    for vehicle_id in sorted(setpoints_kw):
        planned = float(setpoints_kw[vehicle_id])
        if not math.isfinite(planned):
            raise ValueError(f"planned setpoint of {vehicle_id!r} must be finite, got {planned!r}")
        planned_w = math.floor(abs(planned) * _PER_KW + _EPS_W)
        if planned_w == 0:
            continue
        v = by_id.get(vehicle_id)
        if v is None:
            excluded[vehicle_id] = "planned, but not an active vehicle of the signal's fleet"
            continue
        own = SignalSpec(signal.signal_type, planned, signal.duration_s)
        limit = vehicle_limit_kw(v, own, policy)
        reason = _exclusion_reason(v, own, policy, limit)
        if reason is not None:
            excluded[vehicle_id] = reason
            continue
        watts = min(planned_w, math.floor(limit * _PER_KW + _EPS_W))
        sign = _sign(planned)
        setpoints[vehicle_id] = round(sign * watts / _PER_KW, 3)
        allocated_w += int(sign) * watts
    requested = float(signal.power_kw)
    allocated = allocated_w / _PER_KW
    return Allocation(
        setpoints_kw=setpoints,
        scores={},
        strategy=PLANNED,
        requested_kw=requested,
        allocated_kw=allocated,
        unallocated_kw=_unallocated(requested, allocated),
        excluded=excluded,
    )


def _unallocated(requested: float, allocated: float) -> float:
    rest = requested - allocated
    # float noise around "fully covered" must not flip the sign
    return 0.0 if abs(rest) < 1e-9 else rest


# --- fallback ----------------------------------------------------------------------


def balanced_threshold(v: VehicleState, policy: Policy) -> float:
    """SoC below which the balanced fallback does not give a vehicle extra
    discharge: ``policy.balanced_min_soc`` (30 % by default), or the vehicle's
    own ``min_soc`` when that is set lower (the owner allows deeper discharge),
    i.e. ``min(v.min_soc, policy.balanced_min_soc)``. The SoC floor of
    :func:`soc_floor` still applies on top when SoC constraints are on."""
    return min(v.min_soc, policy.balanced_min_soc)


def fallback_allocate(
    shortfall_kw: float,
    signal: SignalSpec,
    acked: Mapping[str, float],
    candidates: Sequence[VehicleState],
    policy: Policy,
    *,
    rng: random.Random,
    failed: Collection[str] = frozenset(),
) -> Allocation:
    """Re-dispatch the power that was not acknowledged, with ``policy.fallback``.

    ``shortfall_kw`` is signed like the signal (a zero or opposite-sign
    shortfall re-dispatches nothing). ``acked`` maps vehicle_id -> setpoint
    already acknowledged in this signal (signed). ``candidates`` are the
    vehicles that may take power, acked ones included, with ``committed`` set
    only for commands of *other* signals; ``failed`` lists vehicles that
    rejected or did not answer in this signal: they are never chosen.
    Candidates go through :func:`vehicle_filter` first; each vehicle's limit
    is its full :func:`vehicle_limit_kw` for the signal.

    - ``noop``: nothing.
    - ``balanced``: the extra power goes to the acked vehicles, split in
      proportion to remaining headroom (limit - |acked|) times an SoC score,
      capped at the headroom, remainder re-split. What they cannot cover is
      split equally among the other eligible candidates. For a discharge,
      both stages skip vehicles whose SoC is unknown or below
      :func:`balanced_threshold`.
    - ``probabilistic``: eligible candidates not in ``acked`` are ordered by
      weighted sampling without replacement on ``ack_rate`` (drawn from
      ``rng`` in vehicle_id order, so a seeded rng is deterministic), and each
      is filled up to its limit in that order until the shortfall is covered.

    ``setpoints_kw`` are ABSOLUTE: for a vehicle that already holds an acked
    setpoint it is ``acked + extra`` (what to send it now), for the others the
    extra. ``allocated_kw`` counts only the extra power, so ``allocated_kw +
    unallocated_kw == shortfall_kw``. No vehicle ever exceeds its limit in total.
    """
    mode = policy.fallback
    requested = float(shortfall_kw)
    sign = _sign(signal.power_kw)
    if mode == "noop" or sign == 0 or requested * sign <= 0:
        return _empty(mode, requested)
    magnitude = abs(requested)
    discharge = sign > 0

    eligible, excluded = vehicle_filter(candidates, signal, policy)
    eligible.sort(key=lambda v: v.vehicle_id)
    failed = set(failed)
    pool: list[VehicleState] = []
    for v in eligible:
        if v.vehicle_id in failed:
            excluded[v.vehicle_id] = "did not acknowledge in this signal"
        else:
            pool.append(v)

    if mode == "probabilistic":
        return _probabilistic(magnitude, sign, signal, acked, pool, excluded, policy, rng)
    return _balanced(magnitude, sign, discharge, signal, acked, pool, excluded, policy)


def _balanced(
    magnitude: float,
    sign: float,
    discharge: bool,
    signal: SignalSpec,
    acked: Mapping[str, float],
    pool: list[VehicleState],
    excluded: dict[str, str],
    policy: Policy,
) -> Allocation:
    ackers: list[VehicleState] = []
    others: list[VehicleState] = []
    for v in pool:
        if discharge:
            threshold = balanced_threshold(v, policy)
            if v.soc is None:
                excluded[v.vehicle_id] = "SoC unknown"
                continue
            if v.soc < threshold:
                excluded[v.vehicle_id] = f"SoC {v.soc:.2f} below balanced threshold {threshold:.2f}"
                continue
        held = acked.get(v.vehicle_id)
        if held is None:
            others.append(v)
        elif held * sign > 0:
            ackers.append(v)
        else:
            excluded[v.vehicle_id] = "acknowledged a setpoint in the other direction"

    lim_a = np.array([vehicle_limit_kw(v, signal, policy) for v in ackers], dtype=float)
    held_a = np.array([abs(acked[v.vehicle_id]) for v in ackers], dtype=float)
    head_a = np.maximum(lim_a - held_a, 0.0)
    score_a = np.array(
        [_MIN_SCORE + (1 - _MIN_SCORE) * _soc_headroom(v, discharge, soc_floor(v, policy)) for v in ackers]
    )
    x_a = _weighted_fill(magnitude, head_a, score_a)
    lim_o = np.array([vehicle_limit_kw(v, signal, policy) for v in others], dtype=float)
    x_o = _water_fill(max(0.0, magnitude - float(x_a.sum())), lim_o)

    watts = _to_watts(np.concatenate((x_a, x_o)), np.concatenate((head_a, lim_o)), magnitude)
    setpoints: dict[str, float] = {}
    for i, v in enumerate(ackers):
        if watts[i]:
            total = min(round(float(held_a[i]) + int(watts[i]) / _PER_KW, 3), float(lim_a[i]))
            setpoints[v.vehicle_id] = sign * total
    setpoints.update(_setpoints([v.vehicle_id for v in others], watts[len(ackers) :], sign))
    scores = {v.vehicle_id: round(sc, 6) for v, sc in zip(ackers, score_a.tolist(), strict=True)}
    scores.update(dict.fromkeys((v.vehicle_id for v in others), 1.0))
    allocated = sign * int(watts.sum()) / _PER_KW
    requested = sign * magnitude
    return Allocation(
        setpoints, scores, "balanced", requested, allocated, _unallocated(requested, allocated), excluded
    )


def _probabilistic(
    magnitude: float,
    sign: float,
    signal: SignalSpec,
    acked: Mapping[str, float],
    pool: list[VehicleState],
    excluded: dict[str, str],
    policy: Policy,
    rng: random.Random,
) -> Allocation:
    keyed: list[tuple[float, str, VehicleState]] = []
    for v in pool:  # vehicle_id order: the draws do not depend on input order
        if v.vehicle_id in acked:
            continue
        u = rng.random()
        rate = min(1.0, max(0.0, v.ack_rate))
        # Efraimidis-Spirakis: sorting by u ** (1 / w) samples without replacement
        # with probability proportional to w; never-acking vehicles come last.
        key = u ** (1.0 / rate) if rate > 0 else u - 2.0
        keyed.append((-key, v.vehicle_id, v))
    keyed.sort(key=lambda t: (t[0], t[1]))

    need_w = math.floor(magnitude * _PER_KW + _EPS_W)
    setpoints: dict[str, float] = {}
    scores: dict[str, float] = {}
    given_w = 0
    for _, vid, v in keyed:
        scores[vid] = v.ack_rate
        if given_w >= need_w:
            continue
        cap_w = math.floor(vehicle_limit_kw(v, signal, policy) * _PER_KW + _EPS_W)
        take = min(cap_w, need_w - given_w)
        if take > 0:
            setpoints[vid] = sign * take / _PER_KW
            given_w += take
    allocated = sign * given_w / _PER_KW
    requested = sign * magnitude
    return Allocation(
        setpoints, scores, "probabilistic", requested, allocated, _unallocated(requested, allocated), excluded
    )
