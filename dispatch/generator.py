"""Synthetic RTE signals: the scenarios of the signal generator (issue 10).

Pure code, no Django: :func:`generate` / :func:`signals_iter` turn the
``rteGenerator`` config section (SPEC §13) into a deterministic sequence of
:class:`GeneratedSignal` for a seed; ``dispatch.generator_runner`` emits them
through ``services.signal_submit``.

Scenarios (``SCENARIOS``):

- ``steady``: a signal every ``min..max_interval_seconds``, lasting
  ``min..max_duration_seconds``, of ``min..max_power_kw``, its type drawn from
  ``signal_types``.
- ``ramp``: as steady, but the power rises from ``min_power_kw`` to
  ``max_power_kw`` then falls back across a cycle of ``RAMP_CYCLE`` signals.
- ``burst``: ``BURST_SIZE`` signals in quick succession (gaps of
  ``min_interval_seconds / 10``), then a quiet gap drawn as steady's interval.
- ``random_walk``: as steady, but the power follows a random walk (steps of
  ``WALK_STEP`` of the power range) reflected at the power bounds.
- ``afrr``: an aFRR setpoint every ``AFRR_PERIOD_S`` (4 s) lasting as long,
  its power a bounded random walk.
- ``fcr_frequency``: a grid-frequency trace around 50 Hz (Ornstein-Uhlenbeck,
  standard deviation ``FCR_SIGMA_HZ``, mean reversion ``FCR_THETA_PER_S``)
  sampled at steady's intervals; each FCR signal asks the FCR droop response
  (:func:`fcr_droop`) of ``max(|min_power_kw|, |max_power_kw|)`` and lasts
  until the next sample.
- ``replay``: the rows of a CSV file (:func:`replay_read`).

Random values drawn from a range are varied by up to ``±jitter_pct`` % and
kept within the range. Powers are signed (SPEC §2: positive = to the grid).
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from v2g_project.config import SIGNAL_TYPES

SCENARIOS: tuple[str, ...] = ("steady", "ramp", "burst", "random_walk", "afrr", "fcr_frequency", "replay")

RAMP_CYCLE = 10  # signals per rise-and-fall cycle
BURST_SIZE = (3, 6)  # signals per burst, inclusive
WALK_STEP = 0.1  # standard deviation of a random-walk step, share of the power range
AFRR_PERIOD_S = 4.0
NOMINAL_HZ = 50.0
FCR_DEADBAND_HZ = 0.010  # no response inside ±10 mHz
FCR_FULL_HZ = 0.200  # full power at ±200 mHz
FCR_SIGMA_HZ = 0.04  # stationary standard deviation of the synthetic frequency
FCR_THETA_PER_S = 1 / 30  # mean reversion rate of the synthetic frequency


class GeneratorConfig(Protocol):
    """The keys of ``rteGenerator`` read here (``RteGeneratorConfig`` has them)."""

    min_interval_seconds: float
    max_interval_seconds: float
    min_duration_seconds: float
    max_duration_seconds: float
    min_power_kw: float
    max_power_kw: float
    signal_types: Sequence[str]
    jitter_pct: float
    seed: int
    replay_file: str


@dataclass(frozen=True)
class GeneratedSignal:
    at: datetime
    signal_type: str
    power_kw: float
    duration_s: float


class GeneratorError(ValueError):
    """A scenario cannot run with this configuration or replay file."""


# --- pure helpers ------------------------------------------------------------


def fcr_droop(frequency_hz: float, full_power_kw: float) -> float:
    """FCR response to a grid frequency: 0 inside the ±10 mHz deadband, else
    proportional to the deviation, full power at ±200 mHz and beyond.
    Under-frequency (below 50 Hz) asks injection (positive), over-frequency
    asks charging (negative)."""
    deviation = NOMINAL_HZ - frequency_hz
    if abs(deviation) <= FCR_DEADBAND_HZ:
        return 0.0
    share = max(-1.0, min(1.0, deviation / FCR_FULL_HZ))
    return share * abs(full_power_kw)


def frequency_step(rng: random.Random, frequency_hz: float, dt_s: float) -> float:
    """One exact Ornstein-Uhlenbeck step of the frequency around 50 Hz."""
    decay = math.exp(-FCR_THETA_PER_S * dt_s)
    spread = FCR_SIGMA_HZ * math.sqrt(1 - decay * decay)
    return NOMINAL_HZ + (frequency_hz - NOMINAL_HZ) * decay + rng.gauss(0.0, spread)


def _draw(rng: random.Random, low: float, high: float, jitter_pct: float) -> float:
    """A value of [low, high], varied by up to ±jitter_pct % and kept within it."""
    value = rng.uniform(low, high)
    value *= 1 + rng.uniform(-jitter_pct, jitter_pct) / 100
    return min(high, max(low, value))


def _walk(rng: random.Random, value: float, low: float, high: float) -> float:
    """One random-walk step, reflected at the bounds."""
    if high <= low:
        return low
    value += rng.gauss(0.0, WALK_STEP * (high - low))
    span = 2 * (high - low)
    value = (value - low) % span
    return low + (span - value if value > high - low else value)


# --- scenarios -----------------------------------------------------------------


def _interval(rng: random.Random, cfg: GeneratorConfig) -> float:
    return _draw(rng, cfg.min_interval_seconds, cfg.max_interval_seconds, cfg.jitter_pct)


def _duration(rng: random.Random, cfg: GeneratorConfig) -> float:
    return _draw(rng, cfg.min_duration_seconds, cfg.max_duration_seconds, cfg.jitter_pct)


def _steady(rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    at = start
    while True:
        power = _draw(rng, cfg.min_power_kw, cfg.max_power_kw, cfg.jitter_pct)
        yield GeneratedSignal(at, rng.choice(cfg.signal_types), round(power, 3), _duration(rng, cfg))
        at += timedelta(seconds=_interval(rng, cfg))


def _ramp(rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    at, index = start, 0
    while True:
        phase = (index % RAMP_CYCLE) / RAMP_CYCLE
        level = 1 - abs(2 * phase - 1)  # 0 -> 1 at mid-cycle -> 0
        power = cfg.min_power_kw + level * (cfg.max_power_kw - cfg.min_power_kw)
        yield GeneratedSignal(at, rng.choice(cfg.signal_types), round(power, 3), _duration(rng, cfg))
        at += timedelta(seconds=_interval(rng, cfg))
        index += 1


def _burst(rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    at = start
    quick = cfg.min_interval_seconds / 10
    while True:
        size = rng.randint(*BURST_SIZE)
        for n in range(size):
            power = _draw(rng, cfg.min_power_kw, cfg.max_power_kw, cfg.jitter_pct)
            yield GeneratedSignal(at, rng.choice(cfg.signal_types), round(power, 3), _duration(rng, cfg))
            last = n == size - 1
            at += timedelta(seconds=_interval(rng, cfg) if last else quick)


def _random_walk(rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    at, power = start, (cfg.min_power_kw + cfg.max_power_kw) / 2
    while True:
        yield GeneratedSignal(at, rng.choice(cfg.signal_types), round(power, 3), _duration(rng, cfg))
        power = _walk(rng, power, cfg.min_power_kw, cfg.max_power_kw)
        at += timedelta(seconds=_interval(rng, cfg))


def _afrr(rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    at, power = start, (cfg.min_power_kw + cfg.max_power_kw) / 2
    while True:
        yield GeneratedSignal(at, "aFRR", round(power, 3), AFRR_PERIOD_S)
        power = _walk(rng, power, cfg.min_power_kw, cfg.max_power_kw)
        at += timedelta(seconds=AFRR_PERIOD_S)


def _fcr_frequency(rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    at, frequency = start, NOMINAL_HZ
    full = max(abs(cfg.min_power_kw), abs(cfg.max_power_kw))
    while True:
        interval = _interval(rng, cfg)
        yield GeneratedSignal(at, "FCR", round(fcr_droop(frequency, full), 3), interval)
        frequency = frequency_step(rng, frequency, interval)
        at += timedelta(seconds=interval)


def _replay(_rng: random.Random, cfg: GeneratorConfig, start: datetime) -> Iterator[GeneratedSignal]:
    if not cfg.replay_file:
        raise GeneratorError("scenario 'replay' needs rteGenerator.replay_file")
    yield from replay_read(cfg.replay_file, start)


_SCENARIO_FUNCTIONS = {
    "steady": _steady,
    "ramp": _ramp,
    "burst": _burst,
    "random_walk": _random_walk,
    "afrr": _afrr,
    "fcr_frequency": _fcr_frequency,
    "replay": _replay,
}


def signals_iter(cfg: GeneratorConfig, scenario: str, start: datetime) -> Iterator[GeneratedSignal]:
    """The scenario's signals from ``start`` on, in time order (endless but for replay)."""
    if scenario not in _SCENARIO_FUNCTIONS:
        raise GeneratorError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    if start.tzinfo is None:
        raise GeneratorError("start needs a UTC offset")
    rng = random.Random(cfg.seed)
    return _SCENARIO_FUNCTIONS[scenario](rng, cfg, start)


def generate(
    cfg: GeneratorConfig,
    scenario: str,
    start: datetime,
    *,
    count: int | None = None,
    until: datetime | None = None,
) -> list[GeneratedSignal]:
    """The first ``count`` signals, and/or those before ``until`` (one is needed)."""
    if count is None and until is None:
        raise GeneratorError("generate needs count or until")
    out: list[GeneratedSignal] = []
    for item in signals_iter(cfg, scenario, start):
        if (count is not None and len(out) >= count) or (until is not None and item.at >= until):
            break
        out.append(item)
    return out


# --- replay ------------------------------------------------------------------------


def replay_read(path: str | Path, start: datetime) -> list[GeneratedSignal]:
    """Signals of a CSV file, in time order.

    Columns: ``offset_s`` (seconds after ``start``) or ``start_at`` (ISO 8601
    with a UTC offset), then ``signal_type``, ``power_kw`` (signed kW) and
    ``duration_s``. Errors name the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GeneratorError(f"{path}: cannot read the replay file: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [c for c in ("signal_type", "power_kw", "duration_s") if c not in columns]
    if ("offset_s" in columns) == ("start_at" in columns):
        missing.append("offset_s or start_at (one of them)")
    if missing:
        raise GeneratorError(f"{path}:1: missing column(s) {', '.join(missing)}")
    signals: list[GeneratedSignal] = []
    for row in reader:
        line = reader.line_num

        def fail(column: str, message: str, line: int = line) -> GeneratorError:
            return GeneratorError(f"{path}:{line}: {column}: {message}")

        if None in row or any(v is None for v in row.values()):
            raise fail("row", f"expected {len(columns)} fields")
        row = {k: v.strip() for k, v in row.items()}
        if "offset_s" in row:
            offset = _number(row["offset_s"])
            if offset is None or offset < 0:
                raise fail("offset_s", f"{row['offset_s']!r} is not a number of seconds >= 0")
            at = start + timedelta(seconds=offset)
        else:
            try:
                at = datetime.fromisoformat(row["start_at"])
            except ValueError:
                raise fail("start_at", f"{row['start_at']!r} is not an ISO 8601 time") from None
            if at.tzinfo is None:
                raise fail("start_at", f"{row['start_at']!r} needs a UTC offset")
        if row["signal_type"] not in SIGNAL_TYPES:
            raise fail("signal_type", f"unknown {row['signal_type']!r}; one of {', '.join(SIGNAL_TYPES)}")
        power = _number(row["power_kw"])
        if power is None:
            raise fail("power_kw", f"{row['power_kw']!r} is not a number of kW")
        duration = _number(row["duration_s"])
        if duration is None or duration <= 0:
            raise fail("duration_s", f"{row['duration_s']!r} is not a number of seconds > 0")
        signals.append(GeneratedSignal(at, row["signal_type"], power, duration))
    return sorted(signals, key=lambda s: s.at)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
