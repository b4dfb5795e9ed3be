"""Ecological KPI maths (SPEC §10): pure functions, no Django.

Sign (SPEC §2): positive power = energy delivered to the grid (injected),
negative = absorbed from the grid (consumed, i.e. extra charging).

A vehicle applies an acknowledged command from the moment it is in force,
``max(acked_at, signal start)``, until the first of: the signal's end, the
command's ``valid_until``, and the moment the next acknowledged command of the
same vehicle comes into force (a new setpoint supersedes the old one). Energy
is power x that duration, split at local midnights (a local day has 23, 24 or
25 hours) and, with a marginal emission factor series, at quarter-hours.

Telemetry, where there is some, replaces the commands: a reported power holds
from its sample until the vehicle's next sample, for at most ``MAX_SAMPLE_GAP``
(a longer gap is unknown, not zero). Over the time so covered the measured
energy counts (what actually flowed, the vehicle's own charging included);
over the rest, the commands' energy.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

QUARTER = dt.timedelta(minutes=15)
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# How long a telemetry sample's power holds at most when no next sample follows
# sooner; beyond it the power is unknown and the commands count instead.
MAX_SAMPLE_GAP = dt.timedelta(minutes=15)


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


class Sample(NamedTuple):
    """A power the vehicle reported (kW, + = to the grid) at ``reported_at`` (aware)."""

    vehicle_id: str
    reported_at: dt.datetime
    power_kw: float


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
    measured_kwh: float = 0.0  # the part of injected + consumed that telemetry measured

    @property
    def energy_ratio(self) -> float | None:
        return energy_ratio(self.injected_kwh, self.consumed_kwh)

    @property
    def measured_share(self) -> float:
        """Share (0-1) of the energy (injected + consumed) measured by telemetry."""
        total = self.injected_kwh + self.consumed_kwh
        if total <= 0:
            return 0.0
        return min(1.0, self.measured_kwh / total)


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


def measured_intervals(samples: Iterable[Sample], max_gap: dt.timedelta = MAX_SAMPLE_GAP) -> list[Interval]:
    """The step function of each vehicle's samples: a sample's power from its
    time until the vehicle's next sample, for at most ``max_gap``. Zero-power
    intervals are kept: they are measured time (coverage) too."""
    by_vehicle: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_vehicle[sample.vehicle_id].append(sample)
    out: list[Interval] = []
    for vehicle_id, own in by_vehicle.items():
        own.sort(key=lambda s: s.reported_at)
        for i, sample in enumerate(own):
            end = sample.reported_at + max_gap
            if i + 1 < len(own):
                end = min(end, own[i + 1].reported_at)
            if end > sample.reported_at:
                out.append(Interval(vehicle_id, sample.power_kw, sample.reported_at, end))
    return out


def coverage(measured: Iterable[Interval]) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    """Per vehicle, the sorted disjoint spans that telemetry covers."""
    by_vehicle: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for interval in measured:
        by_vehicle[interval.vehicle_id].append((interval.start_at, interval.end_at))
    out: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    for vehicle_id, spans in by_vehicle.items():
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        out[vehicle_id] = merged
    return out


def uncovered(interval: Interval, spans: list[tuple[dt.datetime, dt.datetime]]) -> list[Interval]:
    """The parts of ``interval`` outside ``spans`` (sorted, disjoint)."""
    out: list[Interval] = []
    at, end = interval.start_at, interval.end_at
    for span_start, span_end in spans:
        if span_end <= at:
            continue
        if span_start >= end:
            break
        if span_start > at:
            out.append(Interval(interval.vehicle_id, interval.power_kw, at, span_start))
        at = max(at, span_end)
        if at >= end:
            break
    if at < end:
        out.append(Interval(interval.vehicle_id, interval.power_kw, at, end))
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
    samples: Iterable[Sample] = (),
    max_gap: dt.timedelta = MAX_SAMPLE_GAP,
) -> dict[tuple[str, dt.date], DayKpi]:
    """KPIs per (vehicle id, local day) with any energy.

    Energy: the telemetry ``samples``' step function (see ``measured_intervals``)
    where it covers the time, the commands' intervals elsewhere.

    Flat factor (no series): CO2 avoided = injected kWh x ``emission_factor``.
    With ``marginal_factors`` (gCO2/kWh by quarter-hour start, UTC): avoided =
    Σ injected x factor - Σ consumed x factor per quarter-hour; a quarter-hour
    missing from the series uses ``emission_factor``.
    """
    sums: dict[tuple[str, dt.date], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    quarters = marginal_factors is not None
    measured = measured_intervals(samples, max_gap)
    covered = coverage(measured)
    estimated = [
        part
        for interval in intervals(commands)
        for part in uncovered(interval, covered.get(interval.vehicle_id, []))
    ]
    pieces = [(True, i) for i in measured if i.power_kw != 0] + [(False, i) for i in estimated]
    for is_measured, interval in pieces:
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
            if is_measured:
                acc[3] += abs(energy)
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
