"""Prediction engines (SPEC §7): per vehicle, the forecast plug-in window and
the SoC at future offsets.

Pure code (stdlib + numpy): no Django, no database. The callers (the vehicle
status endpoint, dispatch scoring, the day-ahead scheduler) load the facts and
the history and pass them in.

Conventions (SPEC §2): ``soc`` is a fraction 0-1; power is signed, positive =
to the grid (discharging), negative = from the grid (charging); every datetime
is timezone-aware (UTC in, UTC out).

Physics shared by both engines
------------------------------
- Efficiency ``sqrt(0.87)`` each way (DOMAIN: round trip ≈ 87 %): discharging
  ``P`` kW for ``h`` hours takes ``P·h/η`` kWh out of the battery; charging
  ``|P|`` kW stores ``|P|·h·η`` kWh.
- Power flows only while the vehicle is plugged in, i.e. inside the forecast
  plug-in window; outside it the SoC is held constant (driving consumption is
  not modelled).
- Inside the window, first the setpoint in force (``setpoint_kw``, clamped to
  ``[-max_charge_kw, max_discharge_kw]``) applies until ``setpoint_until``;
  a non-zero setpoint without ``setpoint_until`` applies for the whole window;
  a zero setpoint with ``setpoint_until`` in the future is a "hold at 0 kW"
  command. Then the vehicle's own behaviour: charge at ``max_charge_kw``
  towards ``target_soc`` (a vehicle above its target stays where it is).
- A discharge stops at ``min_soc``; a setpoint charge stops at 1; own charging
  stops at ``target_soc``. A SoC already below ``min_soc`` (a vehicle that
  arrived nearly empty) is never pushed up to it by clipping, only by charging,
  so ``t+0m`` is always the latest SoC.
- If the SoC is unknown (no latest state, or ``latest.soc is None``) the SoC
  forecast is an empty dict; otherwise it has a key for every requested
  offset (minutes, >= 0; a negative offset is a ``ValueError``).

Windows
-------
``DeterministicEngine``: plugged in now → ``(latest.at, departure_at)`` if the
departure is known and in the future, else ``(latest.at, now + 8 h)``
(``latest.at`` is clamped to ``now`` if the vehicle clock is ahead);
unplugged, or no latest state → ``None`` (it cannot know when the vehicle
will come back, so it never predicts charging for it).

``HistoryEngine``: see its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

ONE_WAY_EFFICIENCY = math.sqrt(0.87)
DEFAULT_PLUGGED_HOURS = 8.0
SLOT_S = 900
SLOTS_PER_DAY = 96  # wall-clock quarter-hours of a local day (DST days have 92/100 real ones)
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Sample:
    """One telemetry observation."""

    at: datetime  # aware UTC
    soc: float | None  # 0-1
    plugged_in: bool
    power_kw: float  # SPEC §2 sign: + = to the grid (discharging), - = charging


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    """What the registry and the latest state say about one vehicle."""

    vehicle_id: str
    battery_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    min_soc: float
    target_soc: float
    departure_at: datetime | None  # next planned departure if known
    latest: Sample | None  # latest state
    setpoint_kw: float = 0.0  # setpoint in force now (signed), 0 if none
    setpoint_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Forecast:
    plugin_window: tuple[datetime, datetime] | None  # current or next plugged-in window; None if unknown
    soc: dict[int, float]  # minutes offset -> predicted SoC (0-1), for every requested offset


class PredictionEngine(Protocol):
    def forecast(
        self, facts: VehicleFacts, history: Sequence[Sample], now: datetime, offsets_min: Sequence[int]
    ) -> Forecast:
        """One vehicle, learning from its raw ``history`` if the engine learns."""
        ...

    def forecast_many(
        self,
        facts: Sequence[VehicleFacts],
        profiles: Sequence[PlugProfile | None],
        now: datetime,
        offsets_min: Sequence[int],
    ) -> list[Forecast]:
        """Many vehicles from stored profiles (``profiles[k]`` for ``facts[k]``;
        ``None`` or an engine that does not learn: no profile used)."""
        ...


# --------------------------------------------------------------------------- helpers


def _check_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _check_offsets(offsets_min: Sequence[int]) -> None:
    for offset in offsets_min:
        if offset < 0:
            raise ValueError(f"SoC offsets are minutes >= 0, got {offset}")


def _advance(
    soc: float, power_kw: float, hours: float, floor: float, ceiling: float, battery_kwh: float
) -> float:
    """SoC after ``hours`` at constant ``power_kw`` (SPEC §2 sign), stopping at the bounds."""
    if hours <= 0 or power_kw == 0 or battery_kwh <= 0:
        return soc
    if power_kw > 0:  # discharge: the battery gives P/η
        if soc <= floor:
            return soc
        return max(soc - power_kw * hours / ONE_WAY_EFFICIENCY / battery_kwh, floor)
    if soc >= ceiling:  # charge: the battery keeps |P|·η
        return soc
    return min(soc - power_kw * hours * ONE_WAY_EFFICIENCY / battery_kwh, ceiling)


def simulate_soc(
    facts: VehicleFacts,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    offsets_min: Sequence[int],
) -> dict[int, float]:
    """The SoC at each offset given the plug-in ``window`` (module docstring: physics).

    Piecewise constant power between breakpoints (window start/end, setpoint
    end), so the result is exact, not a time-stepped approximation.
    """
    _check_offsets(offsets_min)
    latest = facts.latest
    if latest is None or latest.soc is None:
        return {}
    soc0 = float(latest.soc)
    if not offsets_min:
        return {}
    now_s = now.timestamp()
    if window is None:
        return {int(o): soc0 for o in offsets_min}

    plug_from = max(window[0].timestamp() - now_s, 0.0)
    plug_to = max(window[1].timestamp() - now_s, 0.0)
    setpoint = min(max(facts.setpoint_kw, -facts.max_charge_kw), facts.max_discharge_kw)
    if facts.setpoint_until is not None:
        setpoint_to = max(facts.setpoint_until.timestamp() - now_s, 0.0)
    else:
        setpoint_to = math.inf if setpoint != 0 else 0.0
    own_kw = -abs(facts.max_charge_kw)
    floor = facts.min_soc
    battery = facts.battery_kwh

    breaks = sorted({0.0, plug_from, plug_to, setpoint_to} - {math.inf})

    def mode(t0: float) -> tuple[float, float]:
        """(power, ceiling) on the segment starting at t0 (seconds from now)."""
        if not plug_from <= t0 < plug_to:
            return 0.0, 1.0
        if t0 < setpoint_to:
            return setpoint, 1.0
        return own_kw, facts.target_soc

    result: dict[int, float] = {}
    soc, t = soc0, 0.0
    for offset in sorted(set(offsets_min)):
        target_t = offset * 60.0
        while t < target_t:
            seg_end = next((b for b in breaks if b > t), math.inf)
            step_to = min(seg_end, target_t)
            power, ceiling = mode(t)
            soc = _advance(soc, power, (step_to - t) / 3600.0, floor, ceiling, battery)
            t = step_to
        result[int(offset)] = min(max(soc, 0.0), 1.0)
    return {int(o): result[int(o)] for o in offsets_min}


def simulate_soc_many(
    facts: Sequence[VehicleFacts],
    now: datetime,
    windows: Sequence[tuple[datetime, datetime] | None],
    offsets_min: Sequence[int],
) -> list[dict[int, float]]:
    """:func:`simulate_soc` for many vehicles at once, vectorised over the
    vehicles (the same operations in the same order, so the same floats): a
    status page or a dispatch over 10,000 vehicles loops over a handful of
    segments, not over the vehicles."""
    _check_offsets(offsets_min)
    n = len(facts)
    if n == 0:
        return []
    if not offsets_min:
        return [{} for _ in facts]
    now_s = now.timestamp()
    soc = np.array(
        [f.latest.soc if f.latest is not None and f.latest.soc is not None else math.nan for f in facts],
        dtype=np.float64,
    )
    known = ~np.isnan(soc)
    battery = np.array([f.battery_kwh for f in facts], dtype=np.float64)
    floor = np.array([f.min_soc for f in facts], dtype=np.float64)
    target_soc = np.array([f.target_soc for f in facts], dtype=np.float64)
    max_charge = np.array([f.max_charge_kw for f in facts], dtype=np.float64)
    max_discharge = np.array([f.max_discharge_kw for f in facts], dtype=np.float64)
    setpoint = np.minimum(
        np.maximum(np.array([f.setpoint_kw for f in facts], dtype=np.float64), -max_charge), max_discharge
    )
    setpoint_to = np.array(
        [
            max(f.setpoint_until.timestamp() - now_s, 0.0)
            if f.setpoint_until is not None
            else (math.inf if sp != 0 else 0.0)
            for f, sp in zip(facts, setpoint.tolist(), strict=True)
        ]
    )
    plug_from = np.array([max(w[0].timestamp() - now_s, 0.0) if w else 0.0 for w in windows])
    plug_to = np.array([max(w[1].timestamp() - now_s, 0.0) if w else 0.0 for w in windows])
    own_kw = -np.abs(max_charge)
    breaks = np.stack([np.zeros(n), plug_from, plug_to, setpoint_to], axis=1)
    safe_battery = np.where(battery > 0, battery, 1.0)

    t = np.zeros(n)
    result: dict[int, list[float]] = {}
    for offset in sorted({int(o) for o in offsets_min}):
        target_t = offset * 60.0
        while True:
            active = t < target_t
            if not active.any():
                break
            later = np.where(breaks > t[:, None], breaks, math.inf).min(axis=1)
            step_to = np.minimum(later, target_t)
            plugged = (plug_from <= t) & (t < plug_to)
            held = t < setpoint_to
            power = np.where(plugged, np.where(held, setpoint, own_kw), 0.0)
            ceiling = np.where(plugged & ~held, target_soc, 1.0)
            hours = (step_to - t) / 3600.0
            moves = active & (hours > 0) & (battery > 0)
            with np.errstate(invalid="ignore"):
                out = np.maximum(soc - power * hours / ONE_WAY_EFFICIENCY / safe_battery, floor)
                into = np.minimum(soc - power * hours * ONE_WAY_EFFICIENCY / safe_battery, ceiling)
                discharged = np.where(soc <= floor, soc, out)
                charged = np.where(soc >= ceiling, soc, into)
            soc = np.where(moves & (power > 0), discharged, np.where(moves & (power < 0), charged, soc))
            t = np.where(active, step_to, t)
        result[offset] = np.minimum(np.maximum(soc, 0.0), 1.0).tolist()
    columns = [(int(o), result[int(o)]) for o in offsets_min]
    return [{o: values[k] for o, values in columns} if known[k] else {} for k in range(n)]


# --------------------------------------------------------------------------- deterministic


class DeterministicEngine:
    """No history needed: the window from the latest state and the departure
    time (module docstring), the SoC from the shared physics. For tests and as
    the fallback of :class:`HistoryEngine`."""

    def __init__(self, plugged_hours: float = DEFAULT_PLUGGED_HOURS) -> None:
        self.plugged_hours = plugged_hours

    def window(self, facts: VehicleFacts, now: datetime) -> tuple[datetime, datetime] | None:
        latest = facts.latest
        if latest is None or not latest.plugged_in:
            return None
        start = min(latest.at, now)
        if facts.departure_at is not None and facts.departure_at > now:
            end = facts.departure_at
        else:
            end = now + timedelta(hours=self.plugged_hours)
        return (start.astimezone(UTC), end.astimezone(UTC))

    def forecast(
        self, facts: VehicleFacts, history: Sequence[Sample], now: datetime, offsets_min: Sequence[int]
    ) -> Forecast:
        _check_aware(now, "now")
        window = self.window(facts, now)
        return Forecast(plugin_window=window, soc=simulate_soc(facts, now, window, offsets_min))

    def forecast_many(
        self,
        facts: Sequence[VehicleFacts],
        profiles: Sequence[PlugProfile | None],
        now: datetime,
        offsets_min: Sequence[int],
    ) -> list[Forecast]:
        _check_aware(now, "now")
        windows = [self.window(f, now) for f in facts]
        socs = simulate_soc_many(facts, now, windows, offsets_min)
        return [Forecast(plugin_window=w, soc=soc) for w, soc in zip(windows, socs, strict=True)]


# --------------------------------------------------------------------------- history


@lru_cache(maxsize=8192)
def _day_offsets(tz_key: str, utc_day: int) -> np.ndarray:
    """UTC offset (seconds) of each UTC quarter-hour of one UTC day in ``tz_key``.

    Cached: every vehicle of a page covers the same few days. Offsets are
    constant within a UTC quarter-hour for every real zone (transitions happen
    on quarter-hour boundaries).
    """
    tz = ZoneInfo(tz_key)
    base = utc_day * DAY_S
    offsets = np.fromiter(
        (
            datetime.fromtimestamp(base + i * SLOT_S, tz).utcoffset().total_seconds()
            for i in range(SLOTS_PER_DAY)
        ),
        dtype=np.int64,
        count=SLOTS_PER_DAY,
    )
    offsets.flags.writeable = False
    return offsets


def _local_slots(tz_key: str, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For UTC quarter-hour indices ``q`` (epoch // 900, non-decreasing), the
    day kind (0 weekday, 1 weekend) and the local wall-clock slot 0-95."""
    days = q // SLOTS_PER_DAY
    day0, day1 = int(days[0]), int(days[-1])
    table = np.stack([_day_offsets(tz_key, d) for d in range(day0, day1 + 1)])
    offsets = table[days - day0, q % SLOTS_PER_DAY]
    local = q * SLOT_S + offsets
    local_day = local // DAY_S
    kind = ((local_day + 3) % 7 >= 5).astype(np.int64)  # 1970-01-01 was a Thursday; Monday = 0
    slot = (local % DAY_S) // SLOT_S
    return kind, slot


@dataclass(frozen=True)
class PlugProfile:
    """Learned plug-in probability per day kind (0 weekday, 1 weekend) and local
    quarter-hour slot; ``covered_s`` is how much history it rests on."""

    tz_key: str
    prob: np.ndarray  # shape (2, 96)
    covered_s: float

    def probabilities(self, q: np.ndarray) -> np.ndarray:
        kind, slot = _local_slots(self.tz_key, q)
        return self.prob[kind, slot]

    def probability_at(self, at: datetime) -> float:
        _check_aware(at, "at")
        return float(self.probabilities(np.array([int(at.timestamp() // SLOT_S)]))[0])

    def to_bytes(self) -> bytes:
        """The probabilities quantised to 1/255 (192 bytes: a stored profile is
        read for every vehicle of a status page or a dispatch, so it is small;
        the forecast compares them with a threshold, which 1/255 does not move)."""
        return np.rint(np.clip(self.prob, 0.0, 1.0) * 255).astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, tz_key: str, data: bytes, covered_s: float) -> PlugProfile:
        prob = np.frombuffer(data, dtype=np.uint8)
        if prob.size != 2 * SLOTS_PER_DAY:
            raise ValueError(f"a stored profile is {2 * SLOTS_PER_DAY} bytes, got {prob.size}")
        return cls(tz_key=tz_key, prob=prob.reshape(2, SLOTS_PER_DAY) / 255.0, covered_s=covered_s)


def learn_profile(
    history: Sequence[Sample],
    now: datetime,
    tz_key: str = "Europe/Paris",
    max_hold_s: float = 3600.0,
    prior_weight: float = 1.0,
) -> PlugProfile | None:
    """Plug-in probability per (day kind, local quarter-hour) from ``history``.

    The history (any order, irregular spacing, samples after ``now`` ignored)
    is read as a step function: each sample holds until the next one, for at
    most ``max_hold_s`` (longer gaps are unknown, not "unplugged"). It is
    sampled at the middle of every UTC quarter-hour, which is also a local
    quarter-hour (Paris offsets are whole hours); each observed quarter-hour
    counts once, whatever the sampling rate. Quarter-hours are binned by local
    wall-clock slot, so the 02:00 slot of a fall-back day gets two
    observations and the spring-forward day none for 02:00-02:45.

    Per day kind, the estimate is shrunk towards the pooled (all days) one by
    ``prior_weight`` pseudo-observations, so a kind with no data (only
    weekdays seen) takes the pooled value; a slot never observed at all is 0.
    Returns ``None`` without any usable observation.
    """
    n = len(history)
    if n == 0:
        return None
    t = np.fromiter((s.at.timestamp() for s in history), dtype=np.float64, count=n)
    plugged = np.fromiter((s.plugged_in for s in history), dtype=bool, count=n)
    return learn_profile_arrays(t, plugged, now.timestamp(), tz_key, max_hold_s, prior_weight)


def learn_profile_arrays(
    t: np.ndarray,
    plugged: np.ndarray,
    now_s: float,
    tz_key: str = "Europe/Paris",
    max_hold_s: float = 3600.0,
    prior_weight: float = 1.0,
) -> PlugProfile | None:
    """:func:`learn_profile` on arrays: ``t`` epoch seconds, ``plugged`` booleans.

    The batch learner (``telemetry.services.profiles_learn``) feeds it the
    history already thinned by the database to one sample per quarter-hour
    (``t`` at the middle of each), without building a ``Sample`` per row.
    """
    if t.size == 0:
        return None
    if t.size > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, plugged = t[order], plugged[order]
    keep = t <= now_s
    if not keep.all():
        t, plugged = t[keep], plugged[keep]
        if t.size == 0:
            return None

    q_first = int(t[0] // SLOT_S)
    q_last = int(min(t[-1] + max_hold_s, now_s) // SLOT_S)
    q = np.arange(q_first, q_last + 1, dtype=np.int64)
    mids = q * SLOT_S + SLOT_S / 2
    idx = np.searchsorted(t, mids, side="right") - 1
    valid = (idx >= 0) & (mids <= now_s)
    valid &= mids - t[np.maximum(idx, 0)] <= max_hold_s
    if not valid.any():
        return None
    q, idx = q[valid], idx[valid]
    kind, slot = _local_slots(tz_key, q)
    cell = kind * SLOTS_PER_DAY + slot
    count = np.bincount(cell, minlength=2 * SLOTS_PER_DAY).reshape(2, SLOTS_PER_DAY).astype(np.float64)
    hits = np.bincount(cell, weights=plugged[idx], minlength=2 * SLOTS_PER_DAY).reshape(2, SLOTS_PER_DAY)
    pooled_count = count.sum(axis=0)
    pooled = np.divide(hits.sum(axis=0), pooled_count, out=np.zeros(SLOTS_PER_DAY), where=pooled_count > 0)
    prob = (hits + prior_weight * pooled) / (count + prior_weight)
    return PlugProfile(tz_key=tz_key, prob=prob, covered_s=float(q.size * SLOT_S))


class HistoryEngine:
    """The default engine: learns the plug-in pattern from the history.

    Window, from :func:`learn_profile`'s probabilities on the future local
    quarter-hours (DST-correct: the slots are walked in UTC and looked up by
    local wall-clock slot):

    - plugged in now (latest state; without one, the probability now ≥
      ``threshold``): ``(start, end)`` with ``start`` as in
      :class:`DeterministicEngine` (``latest.at``, or ``now``), ``end`` the
      start of the first quarter-hour after ``now`` whose probability is below
      ``threshold``, searched up to ``horizon_h``; ``now + horizon_h`` when
      none is; ``departure_at`` instead if known, in the future and earlier.
    - unplugged now: the first quarter-hour starting at or after ``now`` (up to
      ``horizon_h`` ahead) with probability ≥ ``threshold`` starts the window,
      the next one below ``threshold`` (up to ``horizon_h`` after the start)
      ends it; ``departure_at`` ends it earlier if it falls inside. ``None`` if
      no quarter-hour in the horizon qualifies.

    With less than ``min_coverage_days`` of observed history (see
    :func:`learn_profile`), the whole forecast is the fallback's
    (:class:`DeterministicEngine`). SoC: the shared physics on this window.
    """

    def __init__(
        self,
        tz_key: str = "Europe/Paris",
        threshold: float = 0.5,
        horizon_h: float = 48.0,
        min_coverage_days: float = 3.0,
        max_hold_s: float = 3600.0,
        fallback: PredictionEngine | None = None,
    ) -> None:
        ZoneInfo(tz_key)  # fail early on an unknown zone
        self.tz_key = tz_key
        self.threshold = threshold
        self.horizon_h = horizon_h
        self.min_coverage_days = min_coverage_days
        self.max_hold_s = max_hold_s
        self.fallback: PredictionEngine = fallback or DeterministicEngine()

    def profile(self, history: Sequence[Sample], now: datetime) -> PlugProfile | None:
        """The learned profile, or ``None`` when there is too little history."""
        profile = learn_profile(history, now, self.tz_key, self.max_hold_s)
        if profile is None or profile.covered_s < self.min_coverage_days * DAY_S:
            return None
        return profile

    def window(
        self, facts: VehicleFacts, profile: PlugProfile, now: datetime
    ) -> tuple[datetime, datetime] | None:
        return self.windows([facts], [profile], now)[0]

    def windows(
        self, facts: Sequence[VehicleFacts], profiles: Sequence[PlugProfile], now: datetime
    ) -> list[tuple[datetime, datetime] | None]:
        """:meth:`window` for many vehicles at once (the class docstring's rules),
        vectorised: one (vehicles x quarter-hours) matrix instead of a loop, so a
        status page or a dispatch over 10,000 vehicles costs milliseconds."""
        if not facts:
            return []
        now_s = now.timestamp()
        horizon_s = self.horizon_h * 3600.0
        horizon_q = math.ceil(horizon_s / SLOT_S)
        q0 = int(now_s // SLOT_S)
        q = np.arange(q0, q0 + 2 * horizon_q + 2, dtype=np.int64)
        starts = (q * SLOT_S).astype(np.float64)
        kind, slot = _local_slots(self.tz_key, q)
        for profile in profiles:
            if profile.tz_key != self.tz_key:
                raise ValueError(f"profile learned in {profile.tz_key}, engine in {self.tz_key}")
        prob = np.stack([p.prob for p in profiles])  # (n, 2, 96)
        on = prob[:, kind, slot] >= self.threshold  # (n, quarter-hours)
        n = len(facts)
        departure = np.array(
            [
                f.departure_at.timestamp()
                if f.departure_at is not None and f.departure_at > now
                else math.inf
                for f in facts
            ]
        )
        plugged_now = np.array(
            [f.latest.plugged_in if f.latest is not None else bool(on[i, 0]) for i, f in enumerate(facts)]
        )
        start_now = np.array(
            [min(f.latest.at.timestamp(), now_s) if f.latest is not None else now_s for f in facts]
        )
        ahead = (starts > now_s) & (starts <= now_s + horizon_s)

        # Plugged in now: until the first quarter-hour ahead that is off.
        off = ~on & ahead
        has_off = off.any(axis=1)
        end_plugged = np.where(has_off, starts[off.argmax(axis=1)], now_s + horizon_s)
        end_plugged = np.minimum(end_plugged, departure)

        # Unplugged: the first quarter-hour from now that is on, until the next off.
        first_on = on & (starts >= now_s) & (starts <= now_s + horizon_s)
        has_on = first_on.any(axis=1)
        i = first_on.argmax(axis=1)
        start_next = starts[i]
        columns = np.arange(q.size)
        after = ~on & (columns >= i[:, None]) & (starts <= (start_next + horizon_s)[:, None])
        has_after = after.any(axis=1)
        end_next = np.where(has_after, starts[after.argmax(axis=1)], start_next + horizon_s)
        end_next = np.where((start_next < departure) & (departure < end_next), departure, end_next)

        result: list[tuple[datetime, datetime] | None] = []
        for k in range(n):
            if plugged_now[k]:
                result.append((_utc(float(start_now[k])), _utc(float(end_plugged[k]))))
            elif has_on[k]:
                result.append((_utc(float(start_next[k])), _utc(float(end_next[k]))))
            else:
                result.append(None)
        return result

    def forecast(
        self, facts: VehicleFacts, history: Sequence[Sample], now: datetime, offsets_min: Sequence[int]
    ) -> Forecast:
        _check_aware(now, "now")
        return self.forecast_many([facts], [self.profile(history, now)], now, offsets_min)[0]

    def forecast_many(
        self,
        facts: Sequence[VehicleFacts],
        profiles: Sequence[PlugProfile | None],
        now: datetime,
        offsets_min: Sequence[int],
    ) -> list[Forecast]:
        """Forecasts from profiles already learned (``None``: too little history,
        the fallback's forecast) — what the status endpoint and dispatch use,
        reading the profiles the Beat job stored instead of the history."""
        _check_aware(now, "now")
        _check_offsets(offsets_min)
        learned = [
            k
            for k, p in enumerate(profiles)
            if p is not None and p.covered_s >= self.min_coverage_days * DAY_S
        ]
        chosen = set(learned)
        others = [k for k in range(len(facts)) if k not in chosen]
        windows = self.windows([facts[k] for k in learned], [profiles[k] for k in learned], now)
        socs = simulate_soc_many([facts[k] for k in learned], now, windows, offsets_min)
        result: dict[int, Forecast] = {
            k: Forecast(plugin_window=w, soc=soc) for k, w, soc in zip(learned, windows, socs, strict=True)
        }
        fallback = self.fallback.forecast_many(
            [facts[k] for k in others], [None] * len(others), now, offsets_min
        )
        result.update(zip(others, fallback, strict=True))
        return [result[k] for k in range(len(facts))]


ENGINES = {"deterministic": DeterministicEngine, "history": HistoryEngine}


def engine_for(name: str, tz_key: str = "Europe/Paris") -> PredictionEngine:
    """A new engine by configuration name: ``"deterministic"`` or ``"history"``
    (learning on the local quarter-hours of ``tz_key``)."""
    if name == "history":
        return HistoryEngine(tz_key=tz_key)
    if name == "deterministic":
        return DeterministicEngine()
    choices = ", ".join(repr(n) for n in ENGINES)
    raise ValueError(f"unknown prediction engine {name!r}; choose one of {choices}")
