"""Ecological KPI maths (SPEC §10): pure functions, no Django.

Sign (SPEC §2): positive power = energy delivered to the grid (injected),
negative = absorbed from the grid (consumed, i.e. extra charging).

A vehicle applies an acknowledged command from the moment it is in force,
``max(acked_at, signal start)``, until the first of: the signal's end, the
command's ``valid_until``, and the moment the next acknowledged command of the
same vehicle comes into force (a new setpoint supersedes the old one). Energy
is power x that duration, split at local midnights (a local day has 23, 24 or
25 hours) and, with a marginal emission factor series, at quarter-hours.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

QUARTER = dt.timedelta(minutes=15)
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class AckedCommand:
    """An acknowledged command as the KPIs see it (aware UTC datetimes)."""

    vehicle_id: str
    power_kw: float
    acked_at: dt.datetime
    signal_start_at: dt.datetime
    signal_end_at: dt.datetime
    valid_until: dt.datetime

    @property
    def start_at(self) -> dt.datetime:
        return max(self.acked_at, self.signal_start_at)

    @property
    def end_at(self) -> dt.datetime:
        return min(self.signal_end_at, self.valid_until)


@dataclass(frozen=True)
class Interval:
    vehicle_id: str
    power_kw: float
    start_at: dt.datetime
    end_at: dt.datetime


@dataclass(frozen=True)
class DayKpi:
    injected_kwh: float
    consumed_kwh: float
    co2_avoided_g: float

    @property
    def energy_ratio(self) -> float | None:
        return energy_ratio(self.injected_kwh, self.consumed_kwh)


def energy_ratio(injected_kwh: float, consumed_kwh: float) -> float | None:
    """Injected / consumed; None (undefined) when nothing was consumed."""
    if consumed_kwh <= 0:
        return None
    return injected_kwh / consumed_kwh


def intervals(commands: Iterable[AckedCommand]) -> list[Interval]:
    """When each command was in force: from its start to its end, cut where the
    vehicle's next acknowledged command comes into force. Empty ones are dropped."""
    by_vehicle: dict[str, list[AckedCommand]] = defaultdict(list)
    for command in commands:
        by_vehicle[command.vehicle_id].append(command)
    out: list[Interval] = []
    for vehicle_id, own in by_vehicle.items():
        own.sort(key=lambda c: (c.start_at, c.acked_at))
        for i, command in enumerate(own):
            end = command.end_at
            if i + 1 < len(own):
                end = min(end, own[i + 1].start_at)
            if end > command.start_at and command.power_kw != 0:
                out.append(Interval(vehicle_id, command.power_kw, command.start_at, end))
    return out


def local_day_bounds(day: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants of a local day's start (midnight) and end (next midnight)."""
    start = dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(dt.UTC)
    return start, end


def _pieces(interval: Interval, tz: ZoneInfo, quarters: bool):
    """(local day, slot start UTC or None, hours) pieces of an interval."""
    at = interval.start_at.astimezone(dt.UTC)
    end = interval.end_at.astimezone(dt.UTC)
    while at < end:
        day = at.astimezone(tz).date()
        cut = local_day_bounds(day, tz)[1]
        slot = None
        if quarters:
            slot = EPOCH + ((at - EPOCH) // QUARTER) * QUARTER
            cut = min(cut, slot + QUARTER)
        nxt = min(cut, end)
        yield day, slot, (nxt - at).total_seconds() / 3600.0
        at = nxt


def daily_kpis(
    commands: Iterable[AckedCommand],
    *,
    tz: ZoneInfo,
    emission_factor: float,
    marginal_factors: Mapping[dt.datetime, float] | None = None,
) -> dict[tuple[str, dt.date], DayKpi]:
    """KPIs per (vehicle id, local day) with any energy.

    Flat factor (no series): CO2 avoided = injected kWh x ``emission_factor``.
    With ``marginal_factors`` (gCO2/kWh by quarter-hour start, UTC): avoided =
    Σ injected x factor - Σ consumed x factor per quarter-hour; a quarter-hour
    missing from the series uses ``emission_factor``.
    """
    sums: dict[tuple[str, dt.date], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    quarters = marginal_factors is not None
    for interval in intervals(commands):
        for day, slot, hours in _pieces(interval, tz, quarters):
            energy = interval.power_kw * hours
            acc = sums[(interval.vehicle_id, day)]
            factor = emission_factor
            if quarters:
                factor = marginal_factors.get(slot, emission_factor)
            if energy > 0:
                acc[0] += energy
                acc[2] += energy * factor
            else:
                acc[1] += -energy
                if quarters:
                    acc[2] -= -energy * factor
    return {key: DayKpi(*values) for key, values in sums.items()}


class FactorFileError(ValueError):
    """A marginal emission factor file that cannot be used; the message names
    the file and line."""


def read_marginal_factors(path: Path) -> dict[dt.datetime, float]:
    """A CSV of ``timestamp,gco2_per_kwh`` (header line first), timestamps ISO 8601
    with an offset on quarter-hours: gCO2/kWh by quarter-hour start (UTC)."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise FactorFileError(f"{path}: cannot read the emission factor file: {exc.strerror}") from exc
    factors: dict[dt.datetime, float] = {}
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["timestamp", "gco2_per_kwh"]:
            raise FactorFileError(f"{path}, line 1: the header must be 'timestamp,gco2_per_kwh'")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise FactorFileError(f"{path}, line {line}: expected 2 columns, got {len(row)}")
            raw_at, raw_factor = (cell.strip() for cell in row)
            try:
                at = dt.datetime.fromisoformat(raw_at)
            except ValueError:
                raise FactorFileError(f"{path}, line {line}: not an ISO 8601 timestamp: {raw_at!r}") from None
            if at.tzinfo is None:
                raise FactorFileError(f"{path}, line {line}: timestamp {raw_at!r} has no UTC offset")
            at = at.astimezone(dt.UTC)
            if (at - EPOCH) % QUARTER:
                raise FactorFileError(f"{path}, line {line}: {raw_at!r} is not on a quarter-hour")
            try:
                factor = float(raw_factor)
            except ValueError:
                raise FactorFileError(f"{path}, line {line}: not a number: {raw_factor!r}") from None
            if not 0 <= factor <= 5000:
                raise FactorFileError(f"{path}, line {line}: gco2_per_kwh {factor} is not in 0-5000")
            if at in factors:
                raise FactorFileError(f"{path}, line {line}: {raw_at} appears twice")
            factors[at] = factor
    return factors
