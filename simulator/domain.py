"""Pure model of a simulated vehicle: battery physics, plug-in schedules and the
answer to a setpoint. No MQTT, no threads, no clock: every call takes ``now``
(an aware UTC datetime), so tests can replay any moment exactly.

Conventions (SPEC §2):
- ``power_kw`` is grid power, positive = delivered to the grid (discharge),
  negative = absorbed from the grid (charging);
- ``soc`` is a fraction 0-1;
- round-trip efficiency ``eta`` is split evenly between the two directions:
  charging stores ``grid_kwh * sqrt(eta)``, discharging draws
  ``grid_kwh / sqrt(eta)`` from the battery, so a full cycle returns ``eta``.

Randomness comes from :func:`draw`, a hash of (seed, keys): the same seed
gives the same fleet, the same schedules and the same decision for a given
command whatever order messages arrive in.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

ROUND_TRIP_EFFICIENCY = 0.87
PROFILES = ("commuter", "captive", "opportunistic", "always")
DEFAULT_PROFILE_MIX: Mapping[str, float] = {"commuter": 0.5, "captive": 0.3, "opportunistic": 0.2}

# SoC comparisons tolerate this much floating-point noise; it also keeps the
# integration from taking zero-length steps at a bound.
EPS = 1e-7
# Driving never takes a simulated battery below this (the car would be towed).
AWAY_FLOOR_SOC = 0.05
# How many local days of schedule ``plug_state`` looks ahead for the next change.
HORIZON_DAYS = 4

REASON_NOT_PLUGGED = "not plugged in"
REASON_EXPIRED = "expired (valid_until has passed)"
REASON_NOT_V2G = "not V2G capable"
REASON_AT_FLOOR = "SoC at its floor (min SoC or SoC needed for departure)"
REASON_FULL = "battery full"


def draw(seed: object, *keys: object) -> float:
    """A uniform number in [0, 1) fixed by the seed and the keys.

    A hash rather than a shared ``random.Random``: decisions must not depend on
    the order in which vehicles are created or commands arrive.
    """
    text = "|".join(map(str, (seed, *keys))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


def rng(seed: object, *keys: object) -> random.Random:
    """A private random stream for one (seed, keys), e.g. one vehicle's specs."""
    return random.Random("|".join(map(str, (seed, *keys))))


def hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600.0


# --- specs --------------------------------------------------------------------


@dataclass(frozen=True)
class VehicleSpec:
    """What a vehicle and its charger can do, and what its driver wants."""

    vehicle_id: str
    battery_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    charger: str  # "ac" (7-22 kW) or "dc" (7.4-11 kW bidirectional wallbox)
    is_v2g: bool
    min_soc: float
    target_soc: float
    profile: str
    efficiency: float = ROUND_TRIP_EFFICIENCY
    away_kw: float = 1.5  # mean battery draw while unplugged (driving), so SoC is lower on return

    @cached_property
    def one_way_efficiency(self) -> float:
        """sqrt(round trip): the share kept on the way in, and on the way out."""
        return math.sqrt(self.efficiency)


def profile_pick(seed: object, vehicle_id: str, mix: Mapping[str, float]) -> str:
    """The vehicle's profile, drawn from ``mix`` (weights, normalised here)."""
    total = sum(mix.values())
    u = draw(seed, vehicle_id, "profile") * total
    for name, weight in mix.items():
        if u < weight:
            return name
        u -= weight
    return next(name for name, weight in reversed(mix.items()) if weight > 0)


def spec_make(
    seed: object,
    vehicle_id: str,
    *,
    profile: str,
    min_soc: float = 0.2,
    efficiency: float = ROUND_TRIP_EFFICIENCY,
    v2g_share: float = 1.0,
) -> VehicleSpec:
    """A plausible vehicle (DOMAIN.md "Vehicles and chargers"), fixed by seed and id."""
    r = rng(seed, vehicle_id, "spec")
    battery = float(round(r.uniform(40, 80)))
    if r.random() < 0.7:
        charger = "ac"
        charge = r.choice((7.0, 7.4, 11.0, 22.0))
        discharge = min(charge, 11.0)  # AC bidirectional cars rarely inject more than 11 kW
    else:
        charger = "dc"
        charge = round(r.uniform(7.4, 11.0), 1)
        discharge = charge
    target = {
        "commuter": 0.8,
        "captive": 0.9,
        "opportunistic": round(r.uniform(0.7, 0.9), 2),
        "always": 0.8,
    }[profile]
    away_kw = {"commuter": 1.5, "captive": 3.0, "opportunistic": 1.0, "always": 0.0}[profile]
    return VehicleSpec(
        vehicle_id=vehicle_id,
        battery_kwh=battery,
        max_charge_kw=charge,
        max_discharge_kw=discharge,
        charger=charger,
        is_v2g=draw(seed, vehicle_id, "v2g") < v2g_share,
        min_soc=min_soc,
        target_soc=max(target, min_soc),
        profile=profile,
        efficiency=efficiency,
        away_kw=away_kw,
    )


# --- plug-in schedules ----------------------------------------------------------


@dataclass(frozen=True)
class PlugState:
    """Whether a vehicle is plugged in, until when that holds (or when to look
    again, at the edge of the look-ahead), and its departure if known."""

    plugged: bool
    until: datetime
    departs_at: datetime | None


@dataclass
class Schedule:
    """When one vehicle is plugged in, in local time, by profile:

    - ``commuter``: at home overnight (about 18:00 to 07:30), away on weekdays,
      plugged all weekend;
    - ``captive``: a depot fleet, plugged except two working windows on
      weekdays (morning, afternoon) with a plugged lunch break;
    - ``opportunistic``: 0-3 random plug sessions a day of 45 min to 4 h;
    - ``always``: always plugged, no departure (tests and benchmarks).

    Habits (usual times) are per vehicle; each day adds a little jitter. Both
    come from the seed, so a seed replays the same week.
    """

    profile: str
    seed: object
    vehicle_id: str
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Paris"))
    _days: dict[date, list[tuple[datetime, datetime]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; expected one of {', '.join(PROFILES)}")
        r = rng(self.seed, self.vehicle_id, "habits")
        # Minutes after local midnight.
        self._leave = 450 + r.uniform(-45, 45)  # commuter 07:30, captive shift start 08:00 below
        self._back = 1080 + r.uniform(-60, 60)
        self._shift = 480 + r.uniform(-30, 30)
        self._lunch = 720 + r.uniform(-20, 20)
        self._shift_end = 1020 + r.uniform(-30, 30)

    def windows(self, day: date) -> list[tuple[datetime, datetime]]:
        """The plugged intervals of local ``day``, as UTC datetimes, sorted."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        minutes = self._local_windows(day)
        result = [(self._at(day, start), self._at(day, end)) for start, end in minutes]
        if len(self._days) > 32:
            self._days.clear()
        self._days[day] = result
        return result

    def _local_windows(self, day: date) -> list[tuple[float, float]]:
        weekend = day.weekday() >= 5
        if self.profile == "always" or (weekend and self.profile in ("commuter", "captive")):
            return [(0, 1440)]
        r = rng(self.seed, self.vehicle_id, "day", day.isoformat())
        if self.profile == "commuter":
            leave = self._leave + r.uniform(-15, 15)
            back = self._back + r.uniform(-15, 15)
            return [(0, leave), (back, 1440)]
        if self.profile == "captive":
            start = self._shift + r.uniform(-10, 10)
            lunch = self._lunch + r.uniform(-10, 10)
            end = self._shift_end + r.uniform(-10, 10)
            return [(0, start), (lunch, lunch + 60), (end, 1440)]
        sessions = []
        for _ in range(r.choices((0, 1, 2, 3), weights=(2, 4, 3, 1))[0]):
            start = r.uniform(420, 1320)  # 07:00-22:00
            sessions.append((start, min(1440.0, start + r.uniform(45, 240))))
        return _merge(sorted(sessions))

    def _at(self, day: date, minute: float) -> datetime:
        """Local ``day`` + ``minute`` as UTC; DST-safe (1440 is the next midnight)."""
        if minute >= 1440:
            return datetime.combine(day + timedelta(days=1), time(0), self.tz).astimezone(UTC)
        local = datetime.combine(
            day, time(int(minute // 60), int(minute % 60), int(minute * 60 % 60)), self.tz
        )
        return local.astimezone(UTC)

    def plug_state(self, now: datetime) -> PlugState:
        """Plugged at ``now``? Until when, and when does the vehicle leave?"""
        today = now.astimezone(self.tz).date()
        days = [today + timedelta(days=n) for n in range(-1, HORIZON_DAYS + 1)]
        horizon_end = self._at(days[-1], 1440)
        merged = _merge([w for d in days for w in self.windows(d)])
        for start, end in merged:
            if start <= now < end:
                departs = end if end < horizon_end else None
                return PlugState(True, end, departs)
            if start > now:
                return PlugState(False, start, None)
        return PlugState(False, horizon_end, None)


@dataclass(frozen=True)
class FixedSchedule:
    """Plugged exactly during the given UTC windows: scenarios and tests that
    need a departure at a chosen moment."""

    windows: tuple[tuple[datetime, datetime], ...]

    def plug_state(self, now: datetime) -> PlugState:
        far = now + timedelta(days=HORIZON_DAYS)
        for start, end in _merge(list(self.windows)):
            if start <= now < end:
                return PlugState(True, end, end)
            if start > now:
                return PlugState(False, start, None)
        return PlugState(False, far, None)


def _merge(windows: list[tuple]) -> list[tuple]:
    """Sorted intervals with touching or overlapping ones joined (midnight splits none)."""
    merged: list[tuple] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


# --- the vehicle ------------------------------------------------------------------


@dataclass(frozen=True)
class Setpoint:
    """An accepted command: grid power (SPEC sign) from ``start_at`` until ``valid_until``."""

    command_id: str
    power_kw: float
    start_at: datetime
    valid_until: datetime


@dataclass
class Vehicle:
    """One simulated vehicle: state of charge integrated exactly (piecewise
    linear) between calls, so the result does not depend on how often it is
    looked at.

    What the vehicle does, in order of precedence:
    1. unplugged: nothing on the grid; driving drains ``away_kw``;
    2. below the SoC it needs to reach ``target_soc`` at departure charging at
       full power: charge at full power, whatever the setpoint says;
    3. a setpoint between its ``start_at`` and ``valid_until``, clipped to the
       charger's limits, never discharging below ``min_soc`` nor that
       departure curve, never charging above 100 %;
    4. otherwise its own schedule: charge at full power up to ``target_soc``.
    """

    spec: VehicleSpec
    schedule: Schedule | FixedSchedule
    soc: float
    updated_at: datetime
    setpoint: Setpoint | None = None
    power_kw: float = 0.0  # grid power being applied at ``updated_at``
    energy_charged_kwh: float = 0.0  # taken from the grid
    energy_discharged_kwh: float = 0.0  # delivered to the grid
    applied_commands: int = 0
    _plug: PlugState | None = field(default=None, repr=False)
    _plug_from: datetime | None = field(default=None, repr=False)

    # --- schedule ---

    def plug_state(self, now: datetime) -> PlugState:
        """The schedule's answer, cached until it can change."""
        plug = self._plug
        if plug is None or self._plug_from is None or not (self._plug_from <= now < plug.until):
            plug = self._plug = self.schedule.plug_state(now)
            self._plug_from = now
        return plug

    def plugged_in(self, now: datetime) -> bool:
        return self.plug_state(now).plugged

    def departure_at(self, now: datetime) -> datetime | None:
        return self.plug_state(now).departs_at

    # --- constraints ---

    def required_soc(self, now: datetime, departs_at: datetime | None) -> float:
        """The lowest SoC from which charging at full power still reaches
        ``target_soc`` at departure (-inf when no departure is known)."""
        if departs_at is None:
            return -math.inf
        rise = self.spec.max_charge_kw * self.spec.one_way_efficiency / self.spec.battery_kwh
        return self.spec.target_soc - rise * max(0.0, hours(departs_at - now))

    def discharge_floor(self, now: datetime) -> float:
        """Never discharge below this: min SoC, or what departure needs."""
        return max(self.spec.min_soc, self.required_soc(now, self.departure_at(now)))

    def _soc_rate(self, power_kw: float) -> float:
        """SoC change per hour at grid power ``power_kw`` (SPEC sign)."""
        spec = self.spec
        if power_kw < 0:  # charging: part of the grid energy is lost on the way in
            return -power_kw * spec.one_way_efficiency / spec.battery_kwh
        return -power_kw / spec.one_way_efficiency / spec.battery_kwh

    def _mode(self, now: datetime, plug: PlugState) -> tuple[float, list[tuple[float, float]]]:
        """Grid power to apply at ``now`` (plugged in) and the bounds that would
        end it: [(hours until reached, SoC there)], the SoC at a bound being
        snapped to exactly on arrival."""
        spec, soc = self.spec, self.soc
        required = self.required_soc(now, plug.departs_at)
        rise = spec.max_charge_kw * spec.one_way_efficiency / spec.battery_kwh  # the required curve's slope
        setpoint = self.setpoint
        active = setpoint is not None and setpoint.start_at <= now < setpoint.valid_until
        if soc <= required + EPS:
            # Rides the required curve (same slope) or stays below it, charging flat out.
            return (0.0 if soc >= 1.0 - EPS else -spec.max_charge_kw), []
        if active:
            power = min(max(setpoint.power_kw, -spec.max_charge_kw), spec.max_discharge_kw)
            if not spec.is_v2g:
                power = min(power, 0.0)
            ceiling = 1.0
        else:
            power = -spec.max_charge_kw if soc < spec.target_soc - EPS else 0.0
            ceiling = spec.target_soc
        if power > 0 and soc <= spec.min_soc + EPS:
            power = 0.0
        if power < 0 and soc >= ceiling - EPS:
            power = 0.0
        rate = self._soc_rate(power)
        bounds: list[tuple[float, float]] = []
        if rate < 0:
            bounds.append(((soc - spec.min_soc) / -rate, spec.min_soc))
        if rate > 0:
            bounds.append(((ceiling - soc) / rate, ceiling))
        if plug.departs_at is not None and rise > rate:
            # The departure curve catches up with the SoC; from there on, charge.
            bounds.append(((soc - required) / (rise - rate), math.nan))
        return power, bounds

    # --- time ---

    def advance(self, now: datetime) -> None:
        """Integrate SoC and energies from ``updated_at`` to ``now``."""
        t = self.updated_at
        spec = self.spec
        while t < now:
            plug = self.plug_state(t)
            end = min(now, plug.until)
            setpoint = self.setpoint
            if setpoint is not None:
                if t >= setpoint.valid_until or not plug.plugged:
                    self.setpoint = setpoint = None  # expired (back to own schedule) or driven away
                elif t < setpoint.start_at:
                    end = min(end, setpoint.start_at)
                else:
                    end = min(end, setpoint.valid_until)
            if not plug.plugged:
                drained = self.soc - spec.away_kw * hours(end - t) / spec.battery_kwh
                self.soc = max(drained, min(self.soc, AWAY_FLOOR_SOC))
                t = end
                continue
            power, bounds = self._mode(t, plug)
            step = hours(end - t)
            snap = None
            for until_h, soc_there in bounds:
                if until_h < step:
                    step, snap = max(until_h, 0.0), soc_there
            segment_end = t + timedelta(hours=step) if snap is not None else end
            if segment_end <= t:  # at a bound already: move on by the clock's resolution
                segment_end = min(end, t + timedelta(microseconds=1))
            step = hours(segment_end - t)
            self.soc = min(1.0, max(0.0, self.soc + self._soc_rate(power) * step))
            if snap is not None and segment_end < end:
                if math.isnan(snap):
                    snap = self.required_soc(segment_end, plug.departs_at)
                self.soc = min(1.0, max(0.0, snap))
            if power < 0:
                self.energy_charged_kwh += -power * step
            else:
                self.energy_discharged_kwh += power * step
            t = segment_end
        if now >= self.updated_at:
            self.updated_at = now
        plug = self.plug_state(self.updated_at)
        if self.setpoint is not None and self.updated_at >= self.setpoint.valid_until:
            self.setpoint = None
        self.power_kw = self._mode(self.updated_at, plug)[0] if plug.plugged else 0.0

    # --- commands ---

    def command(self, setpoint: Setpoint, now: datetime) -> str | None:
        """Take a setpoint: None when accepted, else the reason for refusing it."""
        self.advance(now)
        if setpoint.valid_until <= now:
            return REASON_EXPIRED
        if not self.plugged_in(now):
            return REASON_NOT_PLUGGED
        if setpoint.power_kw > 0:
            if not self.spec.is_v2g:
                return REASON_NOT_V2G
            if self.soc <= self.discharge_floor(now) + EPS:
                return REASON_AT_FLOOR
        if setpoint.power_kw < 0 and self.soc >= 1.0 - EPS:
            return REASON_FULL
        self.setpoint = setpoint
        self.applied_commands += 1
        self.advance(now)  # recompute the power applied from now
        return None

    # --- payloads ---

    def state(self, now: datetime) -> dict:
        """The SPEC §5 state payload at ``now``."""
        self.advance(now)
        plug = self.plug_state(now)
        payload = {
            "vehicle_id": self.spec.vehicle_id,
            "soc": round(self.soc, 4),
            "plugged_in": plug.plugged,
            "power_kw": round(self.power_kw, 3),
            "timestamp": iso(now),
            "battery_kwh": self.spec.battery_kwh,
            "target_soc": self.spec.target_soc,
        }
        if plug.plugged and plug.departs_at is not None:
            payload["departure_at"] = iso(plug.departs_at)
        return payload

    def discovery(self, now: datetime) -> dict:
        """What the vehicle announces of itself: limits, profile, plus its state."""
        spec = self.spec
        return {
            **self.state(now),
            "max_charge_kw": spec.max_charge_kw,
            "max_discharge_kw": spec.max_discharge_kw,
            "is_v2g": spec.is_v2g,
            "min_soc": spec.min_soc,
            "charger": spec.charger,
            "profile": spec.profile,
        }


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with its offset, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def vehicle_make(
    seed: object,
    vehicle_id: str,
    now: datetime,
    *,
    mix: Mapping[str, float] = DEFAULT_PROFILE_MIX,
    tz: ZoneInfo | None = None,
    min_soc: float = 0.2,
    efficiency: float = ROUND_TRIP_EFFICIENCY,
    v2g_share: float = 1.0,
) -> Vehicle:
    """A vehicle fixed by (seed, id): profile, specs, schedule and starting SoC."""
    profile = profile_pick(seed, vehicle_id, mix)
    spec = spec_make(
        seed, vehicle_id, profile=profile, min_soc=min_soc, efficiency=efficiency, v2g_share=v2g_share
    )
    schedule = Schedule(profile, seed, vehicle_id, tz or ZoneInfo("Europe/Paris"))
    soc = round(max(min_soc, 0.3 + 0.6 * draw(seed, vehicle_id, "soc")), 4)
    vehicle = Vehicle(spec=spec, schedule=schedule, soc=soc, updated_at=now)
    vehicle.advance(now)
    return vehicle
