"""Prediction engines (telemetry/prediction.py): pure, no database."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from telemetry.prediction import (
    DeterministicEngine,
    Forecast,
    HistoryEngine,
    PlugProfile,
    Sample,
    VehicleFacts,
    engine_for,
    learn_profile,
    simulate_soc,
    simulate_soc_many,
)

PARIS = ZoneInfo("Europe/Paris")
ETA = math.sqrt(0.87)
NOW = datetime(2025, 3, 25, 12, 0, tzinfo=UTC)  # a Tuesday, 13:00 in Paris


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS).astimezone(UTC)


def facts(
    soc: float | None = 0.6,
    plugged: bool = True,
    at: datetime = NOW,
    departure_at: datetime | None = None,
    setpoint_kw: float = 0.0,
    setpoint_until: datetime | None = None,
    latest: bool = True,
) -> VehicleFacts:
    return VehicleFacts(
        vehicle_id="ev-1",
        battery_kwh=50.0,
        max_charge_kw=10.0,
        max_discharge_kw=10.0,
        min_soc=0.3,
        target_soc=0.8,
        departure_at=departure_at,
        latest=Sample(at=at, soc=soc, plugged_in=plugged, power_kw=0.0) if latest else None,
        setpoint_kw=setpoint_kw,
        setpoint_until=setpoint_until,
    )


def synthetic_history(
    end: datetime, days: float, plugged_at: Callable[[datetime], bool], step_min: int = 5
) -> list[Sample]:
    """Samples every ``step_min`` minutes over ``days`` days before ``end``."""
    count = int(days * 24 * 60 / step_min)
    samples = []
    for i in range(count, 0, -1):
        at = end - timedelta(minutes=i * step_min)
        samples.append(Sample(at=at, soc=0.5, plugged_in=plugged_at(at.astimezone(PARIS)), power_kw=0.0))
    return samples


def nightly(local: datetime) -> bool:
    """Plugged in 18:00-07:30 local, every day."""
    minutes = local.hour * 60 + local.minute
    return minutes >= 18 * 60 or minutes < 7 * 60 + 30


def commuter(local: datetime) -> bool:
    """Weekdays: plugged in 18:00-07:30 local; weekends: plugged all day (at home)."""
    return local.weekday() >= 5 or nightly(local)


# Discharge at 10 kW for 30 min, then own charging at 10 kW towards 0.8.
AFTER_SETPOINT = 0.6 - 10 * 0.5 / ETA / 50
CHARGE_PER_H = 10 * ETA / 50


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (0, 0.6),
        (15, 0.6 - 10 * 0.25 / ETA / 50),
        (30, AFTER_SETPOINT),
        (60, AFTER_SETPOINT + 0.5 * CHARGE_PER_H),
        (120, AFTER_SETPOINT + 1.5 * CHARGE_PER_H),
        (180, 0.8),  # clipped at target_soc
        (600, 0.8),  # after departure (now + 8 h): unplugged, constant
    ],
)
def test_deterministic_discharge_then_own_charging_then_target(offset: int, expected: float) -> None:
    f = facts(
        setpoint_kw=10.0, setpoint_until=NOW + timedelta(minutes=30), departure_at=NOW + timedelta(hours=8)
    )
    forecast = DeterministicEngine().forecast(f, [], NOW, [0, 15, 30, 60, 120, 180, 600])
    assert forecast.plugin_window == (NOW, NOW + timedelta(hours=8))
    assert forecast.soc[offset] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("case", "f", "offsets", "window", "soc"),
    [
        (
            "discharge stops at min_soc",
            facts(soc=0.35, setpoint_kw=10.0, setpoint_until=NOW + timedelta(hours=1)),
            [0, 60],
            (NOW, NOW + timedelta(hours=8)),
            {0: 0.35, 60: 0.3},
        ),
        (
            "setpoint clamped to max_discharge_kw",
            facts(soc=0.6, setpoint_kw=50.0, setpoint_until=NOW + timedelta(minutes=30)),
            [30],
            (NOW, NOW + timedelta(hours=8)),
            {30: AFTER_SETPOINT},
        ),
        (
            "charging setpoint may go above target, up to 1",
            facts(soc=0.9, setpoint_kw=-10.0, setpoint_until=NOW + timedelta(hours=2)),
            [0, 120],
            (NOW, NOW + timedelta(hours=8)),
            {0: 0.9, 120: 1.0},
        ),
        (
            "above target: own behaviour holds",
            facts(soc=0.9),
            [0, 60],
            (NOW, NOW + timedelta(hours=8)),
            {0: 0.9, 60: 0.9},
        ),
        (
            "below min_soc is not clipped up, then charges",
            facts(soc=0.1),
            [0, 60],
            (NOW, NOW + timedelta(hours=8)),
            {0: 0.1, 60: 0.1 + CHARGE_PER_H},
        ),
        (
            "departure ends charging",
            facts(soc=0.4, departure_at=NOW + timedelta(minutes=30)),
            [30, 240],
            (NOW, NOW + timedelta(minutes=30)),
            {30: 0.4 + 0.5 * CHARGE_PER_H, 240: 0.4 + 0.5 * CHARGE_PER_H},
        ),
        (
            "departure in the past: now + 8 h",
            facts(soc=0.8, departure_at=NOW - timedelta(hours=1)),
            [0],
            (NOW, NOW + timedelta(hours=8)),
            {0: 0.8},
        ),
        (
            "window starts at latest.at",
            facts(soc=0.8, at=NOW - timedelta(minutes=5)),
            [0],
            (NOW - timedelta(minutes=5), NOW + timedelta(hours=8)),
            {0: 0.8},
        ),
        (
            "unplugged: no window, constant SoC, setpoint ignored",
            facts(soc=0.6, plugged=False, setpoint_kw=10.0, setpoint_until=NOW + timedelta(hours=1)),
            [0, 60, 1440],
            None,
            {0: 0.6, 60: 0.6, 1440: 0.6},
        ),
        ("unknown SoC", facts(soc=None), [0, 15], (NOW, NOW + timedelta(hours=8)), {}),
        ("no latest state", facts(latest=False), [0, 15], None, {}),
        ("no offsets", facts(), [], (NOW, NOW + timedelta(hours=8)), {}),
    ],
)
def test_deterministic_table(case: str, f: VehicleFacts, offsets: list[int], window, soc: dict) -> None:
    forecast = DeterministicEngine().forecast(f, [], NOW, offsets)
    assert forecast.plugin_window == window, case
    assert forecast.soc == pytest.approx(soc), case
    assert set(forecast.soc) == set(soc), case


@pytest.mark.parametrize("engine", [DeterministicEngine(), HistoryEngine()])
def test_offset_zero_is_current_soc_and_every_offset_answered(engine) -> None:
    history = synthetic_history(NOW, 14, commuter)
    forecast = engine.forecast(facts(soc=0.42), history, NOW, [45, 0, 15, 0])
    assert isinstance(forecast, Forecast)
    assert forecast.soc[0] == 0.42
    assert list(forecast.soc) == [45, 0, 15]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="offsets"):
        DeterministicEngine().forecast(facts(), [], NOW, [-15])
    with pytest.raises(ValueError, match="aware"):
        HistoryEngine().forecast(facts(), [], datetime(2025, 3, 25, 12), [0])


@pytest.mark.parametrize(
    ("case", "now", "plugged", "departure_at", "window"),
    [
        # Tuesday 12:00 Paris, unplugged: tonight 18:00 until Wednesday 07:30.
        (
            "weekday noon",
            paris(2025, 3, 25, 12),
            False,
            None,
            (paris(2025, 3, 25, 18), paris(2025, 3, 26, 7, 30)),
        ),
        # Tuesday 22:00, plugged: from now until Wednesday 07:30.
        (
            "weekday night",
            paris(2025, 3, 25, 22),
            True,
            None,
            (paris(2025, 3, 25, 22), paris(2025, 3, 26, 7, 30)),
        ),
        # ... unless the driver said 06:00.
        (
            "departure earlier",
            paris(2025, 3, 25, 22),
            True,
            paris(2025, 3, 26, 6),
            (paris(2025, 3, 25, 22), paris(2025, 3, 26, 6)),
        ),
        # Departure later than the pattern: the pattern wins.
        (
            "departure later",
            paris(2025, 3, 25, 22),
            True,
            paris(2025, 3, 26, 9),
            (paris(2025, 3, 25, 22), paris(2025, 3, 26, 7, 30)),
        ),
        # Saturday noon, plugged: the weekend at home, until Monday 07:30 (DST change included).
        ("weekend", paris(2025, 3, 29, 12), True, None, (paris(2025, 3, 29, 12), paris(2025, 3, 31, 7, 30))),
        # Friday 22:00, plugged: Monday 07:30 is beyond the 48 h search, so now + 48 h.
        (
            "friday night",
            paris(2025, 3, 28, 22),
            True,
            None,
            (paris(2025, 3, 28, 22), paris(2025, 3, 30, 23)),
        ),
        # Monday noon, unplugged: Monday evening.
        (
            "monday noon",
            paris(2025, 3, 31, 12),
            False,
            None,
            (paris(2025, 3, 31, 18), paris(2025, 4, 1, 7, 30)),
        ),
    ],
)
def test_history_learns_commuter_pattern(case, now, plugged, departure_at, window) -> None:
    history = synthetic_history(now, 14, commuter)
    forecast = HistoryEngine().forecast(
        facts(plugged=plugged, at=now, departure_at=departure_at), history, now, [0, 60]
    )
    assert forecast.plugin_window == window, case


@pytest.mark.parametrize(
    ("now", "window", "hours"),
    [
        # Spring forward (30 March 2025): 18:00 CET -> 07:30 CEST is 12.5 h.
        (paris(2025, 3, 29, 12), (paris(2025, 3, 29, 18), paris(2025, 3, 30, 7, 30)), 12.5),
        # Fall back (26 October 2025): 18:00 CEST -> 07:30 CET is 14.5 h.
        (paris(2025, 10, 25, 12), (paris(2025, 10, 25, 18), paris(2025, 10, 26, 7, 30)), 14.5),
        # History spanning the change, forecast after it.
        (paris(2025, 4, 2, 12), (paris(2025, 4, 2, 18), paris(2025, 4, 3, 7, 30)), 13.5),
    ],
)
def test_history_window_across_dst(now, window, hours) -> None:
    history = synthetic_history(now, 14, nightly)
    forecast = HistoryEngine().forecast(facts(plugged=False, at=now), history, now, [0])
    assert forecast.plugin_window == window
    start, end = forecast.plugin_window
    assert (end - start) == timedelta(hours=hours)
    assert end.astimezone(PARIS).strftime("%H:%M") == "07:30"


def test_history_soc_charges_only_inside_learned_window() -> None:
    now = paris(2025, 3, 25, 12)
    history = synthetic_history(now, 14, commuter)
    f = facts(soc=0.4, plugged=False, at=now)
    forecast = HistoryEngine().forecast(f, history, now, [0, 360, 420, 480])
    # Nothing until 18:00 (+360 min), then 10 kW for an hour, then another hour.
    assert forecast.soc == pytest.approx(
        {0: 0.4, 360: 0.4, 420: 0.4 + CHARGE_PER_H, 480: 0.4 + 2 * CHARGE_PER_H}
    )


def test_history_irregular_and_unsorted_samples() -> None:
    now = paris(2025, 3, 25, 12)
    regular = synthetic_history(now, 14, commuter, step_min=5)
    # Dense while plugged, sparse while away, shuffled: the profile is the same.
    irregular = [s for i, s in enumerate(regular) if s.plugged_in or i % 6 == 0]
    irregular.reverse()
    for history in (regular, irregular):
        forecast = HistoryEngine().forecast(facts(plugged=False, at=now), history, now, [0])
        assert forecast.plugin_window == (paris(2025, 3, 25, 18), paris(2025, 3, 26, 7, 30))


@pytest.mark.parametrize(
    ("case", "history_days"),
    [("no history", 0), ("two days", 2), ("just under three days", 2.9)],
)
def test_history_too_little_falls_back_to_deterministic(case: str, history_days: float) -> None:
    now = paris(2025, 3, 25, 12)
    history = synthetic_history(now, history_days, commuter)
    for plugged in (True, False):
        f = facts(plugged=plugged, at=now, soc=0.5)
        expected = DeterministicEngine().forecast(f, history, now, [0, 60, 600])
        assert HistoryEngine().forecast(f, history, now, [0, 60, 600]) == expected, case


def test_history_enough_days_uses_profile() -> None:
    now = paris(2025, 3, 25, 12)
    history = synthetic_history(now, 3.5, nightly)
    forecast = HistoryEngine().forecast(facts(plugged=False, at=now), history, now, [0])
    assert forecast.plugin_window == (paris(2025, 3, 25, 18), paris(2025, 3, 26, 7, 30))


def test_history_gaps_are_unknown_not_unplugged() -> None:
    now = paris(2025, 3, 25, 12)
    history = synthetic_history(now, 14, nightly, step_min=5)
    # Keep only one sample a day: almost nothing is observed (1 h hold each).
    sparse = history[::288]
    assert HistoryEngine().profile(sparse, now) is None
    profile = learn_profile(sparse, now)
    assert profile is not None
    assert profile.covered_s <= 14 * 3600 + 900


def test_history_never_plugged_gives_no_window() -> None:
    now = paris(2025, 3, 25, 12)
    history = synthetic_history(now, 7, lambda _local: False)
    forecast = HistoryEngine().forecast(facts(plugged=False, at=now, soc=0.5), history, now, [0, 60])
    assert forecast == Forecast(plugin_window=None, soc={0: 0.5, 60: 0.5})


def test_history_without_latest_state_uses_profile_now() -> None:
    now = paris(2025, 3, 25, 22)
    history = synthetic_history(now, 14, commuter)
    forecast = HistoryEngine().forecast(facts(latest=False), history, now, [0])
    assert forecast == Forecast(plugin_window=(now, paris(2025, 3, 26, 7, 30)), soc={})


@pytest.mark.parametrize(
    ("name", "cls"), [("deterministic", DeterministicEngine), ("history", HistoryEngine)]
)
def test_engine_for(name: str, cls: type) -> None:
    assert isinstance(engine_for(name), cls)


@pytest.mark.parametrize("name", ["", "History", "ml"])
def test_engine_for_unknown(name: str) -> None:
    with pytest.raises(ValueError, match=r"'deterministic', 'history'"):
        engine_for(name)


def test_many_vehicles_at_once_match_one_at_a_time() -> None:
    """forecast_many (the status endpoint's and dispatch's path, on stored
    profiles) gives each vehicle the forecast it gets alone, whatever its
    neighbours in the batch; None profiles take the fallback."""
    now = paris(2025, 3, 25, 22)
    engine = HistoryEngine()
    commuter_profile = engine.profile(synthetic_history(now, 14, commuter), now)
    nightly_profile = engine.profile(synthetic_history(now, 14, nightly), now)
    cases = [
        (facts(plugged=True, at=now), commuter_profile),
        (facts(plugged=False, at=now), nightly_profile),
        (facts(plugged=True, at=now, departure_at=paris(2025, 3, 26, 6)), commuter_profile),
        (facts(plugged=False, at=now), None),
        (facts(latest=False), nightly_profile),
        (facts(soc=None, plugged=False, at=now), commuter_profile),
    ]
    batch = engine.forecast_many([f for f, _ in cases], [p for _, p in cases], now, [0, 15, 120])
    for (f, profile), got in zip(cases, batch, strict=True):
        if profile is None:
            alone = engine.fallback.forecast(f, (), now, [0, 15, 120])
        else:
            window = engine.window(f, profile, now)
            alone = Forecast(window, engine.forecast_many([f], [profile], now, [0, 15, 120])[0].soc)
        assert got == alone
    assert batch[0].plugin_window == (now, paris(2025, 3, 26, 7, 30))
    assert batch[3].plugin_window is None  # unplugged, nothing learned: unknown


def test_stored_profile_round_trip_keeps_the_forecast() -> None:
    now = paris(2025, 3, 25, 12)
    profile = HistoryEngine().profile(synthetic_history(now, 14, commuter), now)
    data = profile.to_bytes()
    assert len(data) == 192
    stored = PlugProfile.from_bytes(profile.tz_key, data, profile.covered_s)
    assert abs(stored.prob - profile.prob).max() <= 0.5 / 255 + 1e-12
    f = facts(plugged=False, at=now)
    assert HistoryEngine().window(f, stored, now) == HistoryEngine().window(f, profile, now)
    with pytest.raises(ValueError, match="192 bytes"):
        PlugProfile.from_bytes("Europe/Paris", data[:-1], 0.0)


def test_vectorised_soc_matches_the_scalar_physics_on_random_vehicles() -> None:
    """simulate_soc_many (status pages, dispatch) against simulate_soc, the
    reference, on 2,000 random vehicles: setpoints either way or held at 0,
    windows ahead, behind or absent, SoC below the floor, above the target,
    unknown, zero-capacity batteries."""
    rng = random.Random(11)
    facts_list, windows = [], []
    for i in range(2000):
        soc = rng.choice([None, rng.random(), 0.05, 1.0])
        until = rng.choice([None, NOW + timedelta(minutes=rng.randint(-30, 300))])
        facts_list.append(
            VehicleFacts(
                vehicle_id=f"ev-{i}", battery_kwh=rng.choice([0.0, 40.0, 77.0]),
                max_charge_kw=rng.choice([0.0, 7.4, 11.0]), max_discharge_kw=rng.choice([0.0, 10.0]),
                min_soc=rng.choice([0.1, 0.3]), target_soc=rng.choice([0.7, 0.9]), departure_at=None,
                latest=Sample(NOW, soc, rng.random() < 0.5, 0.0) if rng.random() < 0.9 else None,
                setpoint_kw=rng.choice([0.0, -20.0, -5.0, 6.0, 30.0]), setpoint_until=until,
            )
        )  # fmt: skip
        start = NOW + timedelta(minutes=rng.randint(-120, 300))
        windows.append(rng.choice([None, (start, start + timedelta(minutes=rng.randint(0, 600)))]))
    offsets = [0, 15, 30, 60, 120, 240, 480]
    batch = simulate_soc_many(facts_list, NOW, windows, offsets)
    for f, window, got in zip(facts_list, windows, batch, strict=True):
        expected = simulate_soc(f, NOW, window, offsets)
        assert list(got) == list(expected)
        assert got == pytest.approx(expected, abs=1e-12)
