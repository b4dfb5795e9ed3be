"""Synthetic RTE signal scenarios (dispatch.generator): pure, no database."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from dispatch import generator
from dispatch.generator import SCENARIOS, GeneratedSignal, GeneratorError, fcr_droop, generate, replay_read
from v2g_project.config import RteGeneratorConfig

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
GENERATED = [s for s in SCENARIOS if s != "replay"]


def cfg(**changes) -> RteGeneratorConfig:
    return RteGeneratorConfig(**changes)


def intervals(signals: list[GeneratedSignal]) -> list[float]:
    return [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(signals)]


def test_steady_defaults_stay_within_the_configured_bounds():
    signals = generate(cfg(), "steady", START, count=2000)
    assert signals[0].at == START
    gaps = intervals(signals)
    assert min(gaps) >= 120 and max(gaps) <= 300
    assert all(5 <= s.power_kw <= 25 for s in signals)
    assert all(120 <= s.duration_s <= 600 for s in signals)
    assert {s.signal_type for s in signals} == {"FCR"}
    # Uniform draws over the range: the mean is near the middle, the range is used.
    assert statistics.mean(gaps) == pytest.approx(210, abs=10)
    assert statistics.mean(s.power_kw for s in signals) == pytest.approx(15, abs=1)
    assert min(gaps) < 130 and max(gaps) > 290


def test_jitter_varies_values_by_at_most_its_share_and_stays_in_bounds():
    flat = cfg(min_interval_seconds=100, max_interval_seconds=100, min_power_kw=10, max_power_kw=10)
    assert {g for g in intervals(generate(flat, "steady", START, count=50))} == {100}
    wide = cfg(min_interval_seconds=1, max_interval_seconds=1000, jitter_pct=15)
    base = cfg(min_interval_seconds=1, max_interval_seconds=1000, jitter_pct=0)
    for value, jittered in zip(
        intervals(generate(base, "steady", START, count=300)),
        intervals(generate(wide, "steady", START, count=300)),
        strict=True,
    ):
        assert 1 <= jittered <= 1000
        # The same uniform draw (same seed), then up to ±15 %.
        assert jittered == pytest.approx(value, rel=0.15 + 1e-9) or jittered in (1, 1000)


@pytest.mark.parametrize("scenario", GENERATED)
def test_every_scenario_keeps_power_and_duration_within_bounds(scenario):
    config = cfg(signal_types=["FCR", "aFRR", "mFRR"], min_power_kw=-20, max_power_kw=30)
    signals = generate(config, scenario, START, count=1000)
    assert len(signals) == 1000
    assert all(-30 <= s.power_kw <= 30 for s in signals)
    assert all(s.duration_s > 0 for s in signals)
    assert all(b > 0 for b in intervals(signals))
    if scenario not in ("afrr", "fcr_frequency"):
        assert all(-20 <= s.power_kw <= 30 for s in signals)
        assert all(120 <= s.duration_s <= 600 for s in signals)
        assert {s.signal_type for s in signals} == {"FCR", "aFRR", "mFRR"}


def test_ramp_rises_then_falls_across_a_cycle():
    powers = [s.power_kw for s in generate(cfg(), "ramp", START, count=2 * generator.RAMP_CYCLE)]
    cycle = powers[: generator.RAMP_CYCLE]
    peak = cycle.index(max(cycle))
    assert cycle[0] == 5 and max(cycle) == 25
    assert all(a < b for a, b in itertools.pairwise(cycle[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(cycle[peak:]))
    assert powers[generator.RAMP_CYCLE :] == cycle


def test_burst_sends_groups_of_quick_signals_then_waits():
    signals = generate(cfg(), "burst", START, count=500)
    gaps = intervals(signals)
    quick = [g for g in gaps if g == pytest.approx(12)]  # min_interval_seconds / 10
    quiet = [g for g in gaps if g != pytest.approx(12)]
    assert len(quick) + len(quiet) == len(gaps)
    assert all(120 <= g <= 300 for g in quiet)
    # Bursts of 3-6 signals: 2-5 quick gaps per quiet one.
    assert 2 <= len(quick) / len(quiet) <= 5


def test_random_walk_moves_by_small_steps_within_bounds():
    powers = [s.power_kw for s in generate(cfg(), "random_walk", START, count=2000)]
    assert all(5 <= p <= 25 for p in powers)
    steps = [abs(b - a) for a, b in itertools.pairwise(powers)]
    assert statistics.mean(steps) < 3  # steps of 10 % of the 20 kW range, not fresh draws (~6.7)
    assert max(powers) - min(powers) > 15  # but it wanders over the range


def test_afrr_sends_a_setpoint_every_four_seconds():
    signals = generate(cfg(), "afrr", START, count=900)
    assert set(intervals(signals)) == {4.0}
    assert {s.signal_type for s in signals} == {"aFRR"}
    assert {s.duration_s for s in signals} == {4.0}
    assert all(5 <= s.power_kw <= 25 for s in signals)
    until = generate(cfg(), "afrr", START, until=START + timedelta(minutes=1))
    assert len(until) == 15


@pytest.mark.parametrize(
    ("frequency", "expected"),
    [
        (50.0, 0.0),
        (50.005, 0.0),  # inside the ±10 mHz deadband
        (49.99, 0.0),
        (49.9, 10.0),  # -100 mHz: half of full power, injected
        (50.1, -10.0),  # +100 mHz: half, charging
        (49.8, 20.0),  # -200 mHz: full power
        (49.5, 20.0),  # beyond: still full power
        (50.25, -20.0),
        (49.95, 5.0),
    ],
)
def test_fcr_droop(frequency, expected):
    assert fcr_droop(frequency, 20.0) == pytest.approx(expected)


def test_fcr_frequency_follows_the_droop_of_a_trace_around_50_hz():
    signals = generate(cfg(), "fcr_frequency", START, count=3000)
    assert {s.signal_type for s in signals} == {"FCR"}
    assert signals[0].power_kw == 0  # the trace starts at 50 Hz
    powers = [s.power_kw for s in signals]
    assert all(-25 <= p <= 25 for p in powers)
    # Symmetric around 50 Hz; sigma 40 mHz: mostly inside the droop, some in the deadband.
    assert abs(statistics.mean(powers)) < 1.5
    assert 0.1 < sum(1 for p in powers if p == 0) / len(powers) < 0.35
    assert any(p > 0 for p in powers) and any(p < 0 for p in powers)
    # Each signal lasts until the next.
    assert [s.duration_s for s in signals[:-1]] == pytest.approx(intervals(signals))


def test_fcr_frequency_step_response(monkeypatch):
    """A frequency step to 49.9 Hz (held: no noise, no reversion) asks half of full power."""
    monkeypatch.setattr(generator, "frequency_step", lambda _rng, _f, _dt: 49.9)
    signals = generate(cfg(min_power_kw=0, max_power_kw=30), "fcr_frequency", START, count=3)
    assert [s.power_kw for s in signals] == [0.0, 15.0, 15.0]


@pytest.mark.parametrize("scenario", GENERATED)
def test_same_seed_same_sequence_other_seed_other_sequence(scenario):
    first = generate(cfg(seed=7), scenario, START, count=200)
    assert generate(cfg(seed=7), scenario, START, count=200) == first
    assert generate(cfg(seed=8), scenario, START, count=200) != first


def test_generate_needs_a_known_scenario_a_bound_and_an_aware_start():
    with pytest.raises(GeneratorError, match="unknown scenario 'calm'; one of steady, ramp"):
        generate(cfg(), "calm", START, count=1)
    with pytest.raises(GeneratorError, match="count or until"):
        generate(cfg(), "steady", START)
    with pytest.raises(GeneratorError, match="UTC offset"):
        generate(cfg(), "steady", START.replace(tzinfo=None), count=1)


# --- replay ------------------------------------------------------------------------


def test_replay_offsets_and_absolute_times(tmp_path):
    offsets = tmp_path / "offsets.csv"
    offsets.write_text("offset_s,signal_type,power_kw,duration_s\n60,aFRR,-5.5,30\n0,FCR,12,300\n")
    config = cfg(scenario="replay", replay_file=str(offsets))
    assert generate(config, "replay", START, count=10) == [
        GeneratedSignal(START, "FCR", 12.0, 300.0),
        GeneratedSignal(START + timedelta(seconds=60), "aFRR", -5.5, 30.0),
    ]
    absolute = tmp_path / "absolute.csv"
    absolute.write_text(
        "start_at, signal_type, power_kw, duration_s\n2026-02-01T10:00:00+01:00, MA, 40, 900\n"
    )
    assert replay_read(absolute, START) == [
        GeneratedSignal(datetime(2026, 2, 1, 9, 0, tzinfo=UTC), "MA", 40.0, 900.0)
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("signal_type,power_kw,duration_s\nFCR,1,2\n", ":1: missing column(s) offset_s or start_at"),
        ("offset_s,start_at,signal_type,power_kw,duration_s\n", ":1: missing column(s) offset_s or start_at"),
        ("offset_s,signal_type,duration_s\n0,FCR,2\n", ":1: missing column(s) power_kw"),
        (
            "offset_s,signal_type,power_kw,duration_s\n0,FCR,1,60\n5,XYZ,1,60\n",
            ":3: signal_type: unknown 'XYZ'",
        ),
        ("offset_s,signal_type,power_kw,duration_s\n0,FCR,lots,60\n", ":2: power_kw: 'lots' is not a number"),
        ("offset_s,signal_type,power_kw,duration_s\n0,FCR,nan,60\n", ":2: power_kw: 'nan'"),
        ("offset_s,signal_type,power_kw,duration_s\n0,FCR,1,0\n", ":2: duration_s: '0' is not a number"),
        ("offset_s,signal_type,power_kw,duration_s\n-1,FCR,1,60\n", ":2: offset_s: '-1'"),
        ("offset_s,signal_type,power_kw,duration_s\n0,FCR,1\n", ":2: row: expected 4 fields"),
        ("offset_s,signal_type,power_kw,duration_s\n0,FCR,1,60,9\n", ":2: row: expected 4 fields"),
        ("start_at,signal_type,power_kw,duration_s\n2026-01-01T00:00,FCR,1,60\n", ":2: start_at: "),
        ("start_at,signal_type,power_kw,duration_s\nnoon,FCR,1,60\n", ":2: start_at: 'noon' is not an ISO"),
    ],
)
def test_replay_errors_name_the_file_and_the_line(tmp_path, text, message):
    path = tmp_path / "signals.csv"
    path.write_text(text)
    with pytest.raises(GeneratorError) as error:
        generate(cfg(scenario="replay", replay_file=str(path)), "replay", START, count=10)
    assert str(error.value).startswith(f"{path}:")
    assert message in str(error.value)


def test_replay_of_a_missing_file_or_without_a_file(tmp_path):
    with pytest.raises(GeneratorError, match="cannot read the replay file"):
        replay_read(tmp_path / "nope.csv", START)
    with pytest.raises(GeneratorError, match=r"needs rteGenerator\.replay_file"):
        generate(cfg(), "replay", START, count=1)
