"""Day-ahead planner (scheduler/domain.py): pure, no database."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from datetime import UTC, date, datetime

import pytest

from scheduler import domain
from scheduler.domain import (
    ObjectiveWeights,
    PlanEntry,
    PlanInput,
    PlanResult,
    PlanVehicle,
    day_slots,
    generate_plan,
    plan_check,
)

ETA = math.sqrt(0.87)
DAY = date(2025, 6, 3)
SLOTS = day_slots(DAY, "Europe/Paris", 15)


def vehicle(
    vid: str = "v1",
    battery: float = 60.0,
    charge: float = 11.0,
    discharge: float = 11.0,
    min_soc: float = 0.3,
    soc: float = 0.5,
    windows: tuple[tuple[int, int], ...] = ((0, 96),),
    targets: tuple[tuple[int, float], ...] = (),
) -> PlanVehicle:
    return PlanVehicle(vid, battery, charge, discharge, min_soc, soc, windows, targets)


def profile(n: int, blocks: dict[range, float]) -> tuple[float, ...]:
    out = [0.0] * n
    for slots, kw in blocks.items():
        for t in slots:
            out[t] = kw
    return tuple(out)


def plan(vehicles, target, slots=SLOTS, minutes=15, **kw) -> tuple[PlanInput, PlanResult]:
    inp = PlanInput(tuple(slots), minutes, tuple(target), tuple(vehicles), **kw)
    result = generate_plan(inp)
    assert plan_check(inp, result) == []
    return inp, result


def powers(result: PlanResult, vid: str, n: int) -> list[float]:
    out = [0.0] * n
    for e in result.entries:
        if e.vehicle_id == vid:
            out[e.slot] = e.power_kw
    return out


def soc_path(v: PlanVehicle, result: PlanResult, n: int, minutes: int = 15) -> list[float]:
    """SoC at each slot boundary 0..n."""
    soc, path = v.soc_start, [v.soc_start]
    for p in powers(result, v.vehicle_id, n):
        soc -= (p / ETA if p > 0 else p * ETA) * minutes / 60 / v.battery_kwh
        path.append(soc)
    return path


# --- day_slots ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "minutes", "count", "first", "last"),
    [
        (date(2025, 6, 3), 15, 96, "2025-06-02T22:00", "2025-06-03T21:45"),
        (date(2025, 3, 30), 15, 92, "2025-03-29T23:00", "2025-03-30T21:45"),  # spring: 23 h
        (date(2025, 10, 26), 15, 100, "2025-10-25T22:00", "2025-10-26T22:45"),  # autumn: 25 h
        (date(2025, 3, 30), 30, 46, "2025-03-29T23:00", "2025-03-30T21:30"),
        (date(2025, 10, 26), 60, 25, "2025-10-25T22:00", "2025-10-26T22:00"),
        (date(2025, 1, 15), 60, 24, "2025-01-14T23:00", "2025-01-15T22:00"),
    ],
)
def test_day_slots_are_the_local_day_in_utc(day, minutes, count, first, last):
    slots = day_slots(day, "Europe/Paris", minutes)
    assert len(slots) == count
    assert (slots[0], slots[-1]) == (utc(first), utc(last))
    assert all(s.tzinfo is UTC for s in slots)
    assert all((b - a).total_seconds() == minutes * 60 for a, b in itertools.pairwise(slots))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_day_slots_rejects_other_slot_lengths():
    with pytest.raises(ValueError, match="slot_minutes"):
        day_slots(DAY, "Europe/Paris", 20)


# --- hand-checkable fleets --------------------------------------------------------


def test_one_vehicle_meets_a_discharge_block():
    v = vehicle(soc=0.5)
    _, result = plan([v], profile(96, {range(72, 76): 10.0}))
    assert result.status == "optimal" and result.gap == 0.0
    assert [(e.slot, round(e.power_kw, 6)) for e in result.entries] == [(t, 10.0) for t in range(72, 76)]
    assert result.planned_kw[72:76] == pytest.approx((10.0,) * 4)
    assert sum(result.shortfall_kw) == 0.0
    # 10 kWh to the grid takes 10 / η kWh out of a 60 kWh battery.
    assert soc_path(v, result, 96)[-1] == pytest.approx(0.5 - 10 / ETA / 60)
    # Objective: throughput 10 kWh x 1 + fairness 0.1 x 60 kWh x (10 kWh / 60 kWh) = 11.
    assert result.objective == pytest.approx(11.0)


def test_power_limit_leaves_a_reported_shortfall():
    _, result = plan([vehicle(discharge=7.0)], profile(96, {range(40, 44): 10.0}))
    assert result.planned_kw[40:44] == pytest.approx((7.0,) * 4)
    assert result.shortfall_kw[40:44] == pytest.approx((3.0,) * 4)
    assert sum(result.shortfall_kw) == pytest.approx(12.0)


def test_energy_limit_leaves_a_reported_shortfall_and_stops_at_min_soc():
    # Plugged in at the block: 4 kWh above the floor, i.e. 4·η kWh to the grid.
    v = vehicle(battery=40.0, soc=0.4, min_soc=0.3, windows=((40, 96),))
    _, result = plan([v], profile(96, {range(40, 44): 10.0}))
    delivered = sum(result.planned_kw) * 0.25
    assert delivered == pytest.approx(4 * ETA)
    assert sum(result.shortfall_kw) * 0.25 == pytest.approx(10 - 4 * ETA)
    assert all(s >= 0 for s in result.shortfall_kw)
    assert min(soc_path(v, result, 96)) == pytest.approx(0.3)


def test_no_power_outside_the_windows_and_the_gap_is_shortfall():
    v = vehicle(windows=((0, 28), (72, 96)))
    _, result = plan([v], profile(96, {range(26, 30): 5.0, range(70, 74): 5.0}))
    assert result.planned_kw[26:30] == pytest.approx((5.0, 5.0, 0.0, 0.0))
    assert result.shortfall_kw[26:30] == pytest.approx((0.0, 0.0, 5.0, 5.0))
    assert result.planned_kw[70:74] == pytest.approx((0.0, 0.0, 5.0, 5.0))
    assert {e.slot for e in result.entries} <= set(range(28)) | set(range(72, 96))


def test_zero_target_plans_nothing():
    _, result = plan([vehicle(), vehicle("v2")], [0.0] * 96)
    assert result.entries == () and sum(result.shortfall_kw) == 0.0 and result.objective == 0.0


def test_empty_fleet_reports_the_whole_target_as_shortfall():
    target = profile(96, {range(10, 12): 3.0, range(20, 22): -4.0})
    _, result = plan([], target)
    assert result.entries == () and result.status == "optimal"
    assert result.shortfall_kw == tuple(abs(t) for t in target)


def test_fairness_spreads_the_block_in_proportion_to_batteries():
    a, b = vehicle("a", battery=40.0), vehicle("b", battery=60.0)
    _, result = plan([b, a], profile(96, {range(72, 76): 10.0}))
    # 10 kWh over 100 kWh of batteries: the same share (1/10 of each battery) for both.
    assert sum(powers(result, "a", 96)) * 0.25 == pytest.approx(4.0)
    assert sum(powers(result, "b", 96)) * 0.25 == pytest.approx(6.0)


def test_fairness_off_still_meets_the_target():
    a, b = vehicle("a"), vehicle("b")
    weights = ObjectiveWeights(fairness=0.0)
    _, result = plan([a, b], profile(96, {range(72, 76): 20.0}), weights=weights)
    assert result.planned_kw[72:76] == pytest.approx((20.0,) * 4)


def test_charging_target_is_met_and_a_full_battery_cannot_help():
    # Plugged in for the block only (plugged earlier, the full one would discharge first to make room).
    full = vehicle("full", soc=1.0, windows=((8, 12),))
    half = vehicle("half", soc=0.5, windows=((8, 12),))
    _, result = plan([full, half], profile(96, {range(8, 12): -15.0}))
    assert powers(result, "full", 96) == [0.0] * 96
    assert result.planned_kw[8:12] == pytest.approx((-11.0,) * 4)
    assert result.shortfall_kw[8:12] == pytest.approx((4.0,) * 4)


def test_charging_target_shared_by_two_vehicles():
    a, b = vehicle("a", soc=0.4), vehicle("b", soc=0.4)
    _, result = plan([a, b], profile(96, {range(8, 12): -22.0}))
    assert powers(result, "a", 96)[8:12] == pytest.approx([-11.0] * 4)
    assert powers(result, "b", 96)[8:12] == pytest.approx([-11.0] * 4)
    assert sum(result.shortfall_kw) == 0.0


def test_vehicle_leaving_mid_day_reaches_its_departure_soc():
    # Plugged 00:00-08:00, leaves at slot 32 needing 80 %; the block at 06:00 wants
    # 10 kW for an hour. 60 kWh from 0.5: it must charge 0.3 x 60 = 18 kWh net of
    # what it discharges, before it leaves.
    v = vehicle(soc=0.5, windows=((0, 32),), targets=((32, 0.8),))
    _, result = plan([v], profile(96, {range(24, 28): 10.0}))
    path = soc_path(v, result, 96)
    assert path[32] >= 0.8 - 1e-6
    assert path[32:] == pytest.approx([path[32]] * 65)  # held once unplugged
    assert sum(result.shortfall_kw) == 0.0
    assert all(e.slot < 32 for e in result.entries)


def test_unreachable_departure_target_is_lowered_and_said():
    # 4 slots at 11 kW store 4 x 11 x 0.25 x η kWh: not enough to go from 0.3 to 0.9 on 60 kWh.
    v = vehicle(soc=0.3, windows=((0, 4),), targets=((4, 0.9),))
    _, result = plan([v], [0.0] * 96)
    assert powers(result, "v1", 96)[:4] == pytest.approx([-11.0] * 4)
    assert soc_path(v, result, 96)[4] == pytest.approx(0.3 + 11 * ETA / 60)
    assert any("cannot be reached" in m for m in result.messages)


def test_a_vehicle_does_not_charge_and_discharge_at_once_to_absorb_more():
    # 3 kWh of room: 3/η kWh from the grid, however much the target asks. An LP may
    # charge and discharge one battery at once (wasting energy to absorb more); a car cannot.
    v = vehicle(soc=0.95, windows=((8, 12),))
    _, result = plan([v], profile(96, {range(8, 12): -11.0}))
    assert -sum(result.planned_kw) * 0.25 == pytest.approx(3 / ETA)
    assert soc_path(v, result, 96)[-1] == pytest.approx(1.0)
    assert result.lower_bound < result.objective and result.status == "feasible"


def test_vehicle_below_min_soc_is_never_discharged():
    low = vehicle("low", soc=0.2, min_soc=0.3)
    _, result = plan([low], profile(96, {range(10, 20): -11.0, range(60, 70): 11.0}))
    assert all(p <= 0 for p in powers(result, "low", 96))
    assert result.shortfall_kw[60:70] == pytest.approx((11.0,) * 10)


def test_not_v2g_capable_vehicle_only_charges():
    v = vehicle(discharge=0.0)
    _, result = plan([v], profile(96, {range(10, 14): 5.0, range(20, 24): -5.0}))
    assert result.planned_kw[10:14] == pytest.approx((0.0,) * 4)
    assert result.planned_kw[20:24] == pytest.approx((-5.0,) * 4)


def test_departure_charging_goes_into_charging_slots_first():
    # Needs 2 slots of charging before slot 40; the target asks for charging in 20-23.
    v = vehicle(soc=0.5, windows=((0, 40),), targets=((40, 0.5 + 2 * 11 * 0.25 * ETA / 60),))
    _, result = plan([v], profile(96, {range(20, 22): -11.0}))
    assert powers(result, "v1", 96)[20:22] == pytest.approx([-11.0, -11.0])
    assert sum(1 for p in powers(result, "v1", 96) if p) == 2


# --- slot lengths and DST -----------------------------------------------------------


@pytest.mark.parametrize("minutes", [30, 60])
def test_longer_slots_use_the_slot_length_in_energy(minutes):
    slots = day_slots(DAY, "Europe/Paris", minutes)
    n = len(slots)
    # Plugged from the block on, 8 kWh above the floor: 8·η kWh to the grid at most.
    v = vehicle(battery=40.0, soc=0.5, min_soc=0.3, windows=((2, n),))
    target = profile(n, {range(2, 4): 10.0})
    _, result = plan([v], target, slots=slots, minutes=minutes)
    h = minutes / 60
    delivered = sum(result.planned_kw) * h
    assert delivered == pytest.approx(min(20 * h, 8 * ETA))
    assert soc_path(v, result, n, minutes)[-1] == pytest.approx(0.5 - delivered / ETA / 40)
    assert sum(result.shortfall_kw) * h == pytest.approx(20 * h - delivered)


@pytest.mark.parametrize(("day", "count"), [(date(2025, 3, 30), 92), (date(2025, 10, 26), 100)])
def test_plan_on_dst_days(day, count):
    slots = day_slots(day, "Europe/Paris", 15)
    assert len(slots) == count
    v1 = vehicle("a", windows=((0, 30), (count - 24, count)), targets=((30, 0.6),))
    v2 = vehicle("b", soc=0.8, windows=((count - 40, count),))
    target = profile(count, {range(count - 16, count - 8): 12.0, range(4, 8): -8.0})
    _, result = plan([v1, v2], target, slots=slots)
    assert len(result.planned_kw) == len(result.shortfall_kw) == count
    assert result.planned_kw[count - 16 : count - 8] == pytest.approx((12.0,) * 8)
    assert max(e.slot for e in result.entries) < count
    assert soc_path(v1, result, count)[30] >= 0.6 - 1e-6


# --- determinism, bad input, checker ------------------------------------------------


def test_same_input_same_plan_whatever_the_vehicle_order():
    fleet = random_fleet(random.Random(7), 25, 96)
    target = random_target(random.Random(8), 96, 25)
    _, first = plan(fleet, target)
    _, again = plan(fleet, target)
    _, shuffled = plan(random.Random(1).sample(fleet, len(fleet)), target)
    assert first.entries == again.entries == shuffled.entries
    assert first.planned_kw == again.planned_kw == shuffled.planned_kw
    assert first.entries == tuple(sorted(first.entries, key=lambda e: (e.slot, e.vehicle_id)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_kw": (1.0,) * 95}, "95 values for 96 slots"),
        ({"slot_minutes": 20}, "slot_minutes"),
        ({"vehicles": (vehicle(soc=1.5),)}, "within 0-1"),
        ({"vehicles": (vehicle(battery=0.0),)}, "battery_kwh"),
        ({"vehicles": (vehicle(windows=((90, 97),)),)}, "outside slots"),
        ({"vehicles": (vehicle(), vehicle())}, "appears twice"),
    ],
)
def test_bad_input_is_reported_not_planned(change, message):
    inp = dataclasses.replace(PlanInput(SLOTS, 15, (2.0,) * 96, (vehicle(),)), **change)
    result = generate_plan(inp)
    assert result.status == "infeasible_input"
    assert result.entries == ()
    assert any(message in m for m in result.messages)


def test_plan_check_finds_broken_plans():
    v = vehicle(battery=40.0, soc=0.35, windows=((10, 20),), targets=((20, 0.5),))
    inp = PlanInput(SLOTS, 15, (0.0,) * 96, (v,))
    ok = generate_plan(inp)
    assert plan_check(inp, ok) == []

    def broken(entries):
        planned = [0.0] * 96
        for e in entries:
            planned[e.slot] += e.power_kw
        return dataclasses.replace(ok, entries=tuple(entries), planned_kw=tuple(planned))

    assert any("outside its windows" in m for m in plan_check(inp, broken([PlanEntry("v1", 5, -1.0)])))
    assert any("beyond its limits" in m for m in plan_check(inp, broken([PlanEntry("v1", 12, -12.0)])))
    assert any("below min_soc" in m for m in plan_check(inp, broken([PlanEntry("v1", 12, 11.0)])))
    assert any("departure target" in m for m in plan_check(inp, broken([])))
    assert any(
        "sum of the entries" in m for m in plan_check(inp, dataclasses.replace(ok, planned_kw=(1.0,) * 96))
    )


def random_fleet(rng: random.Random, count: int, n: int) -> list[PlanVehicle]:
    fleet = []
    for i in range(count):
        battery = rng.choice([40.0, 52.0, 60.0, 77.0])
        windows, targets = [], []
        start = 0
        while start < n - 2 and rng.random() < 0.8:
            a = rng.randrange(start, n - 1)
            b = rng.randrange(a + 1, min(n, a + 60) + 1)
            windows.append((a, b))
            if rng.random() < 0.6:
                targets.append((b, rng.choice([0.5, 0.8, 0.95])))
            start = b + rng.randrange(0, 8)
        fleet.append(
            PlanVehicle(
                f"veh-{i:03d}",
                battery,
                rng.choice([3.7, 7.4, 11.0, 22.0]),
                rng.choice([0.0, 7.4, 11.0]),
                rng.choice([0.2, 0.3]),
                round(rng.uniform(0.05, 1.0), 3),
                tuple(windows),
                tuple(targets),
            )
        )
    return fleet


def random_target(rng: random.Random, n: int, count: int) -> tuple[float, ...]:
    scale = count * rng.uniform(1.0, 8.0)
    return tuple(round(rng.uniform(-scale, scale), 1) if rng.random() < 0.6 else 0.0 for _ in range(n))


@pytest.mark.parametrize("seed", range(12))
def test_random_fleets_always_give_valid_plans(seed):
    rng = random.Random(seed)
    minutes = rng.choice([15, 15, 30, 60])
    day = rng.choice([DAY, date(2025, 3, 30), date(2025, 10, 26)])
    slots = day_slots(day, "Europe/Paris", minutes)
    count = rng.randrange(1, 40)
    fleet = random_fleet(rng, count, len(slots))
    _, result = plan(fleet, random_target(rng, len(slots), count), slots=slots, minutes=minutes)
    assert result.status in ("optimal", "feasible")
    assert all(s >= 0 for s in result.shortfall_kw)


# --- the two-stage plan of large fleets -----------------------------------------------


@pytest.fixture
def two_stage(monkeypatch):
    """Small fleets through the large-fleet path: relaxation, then exact batches."""
    monkeypatch.setattr(domain, "EXACT_MAX_PAIRS", 0)
    monkeypatch.setattr(domain, "GROUP_SIZE", 3)
    monkeypatch.setattr(domain, "BATCH_SIZE", 7)


@pytest.mark.parametrize("seed", range(8))
def test_two_stage_plans_are_valid_and_bracket_the_exact_optimum(seed, monkeypatch):
    rng = random.Random(100 + seed)
    count = rng.randrange(10, 30)
    fleet = random_fleet(rng, count, 96)
    target = random_target(rng, 96, count)
    _, exact = plan(fleet, target)
    # The exact LP's optimum bounds every plan from below (a vehicle that cannot charge and
    # discharge at once is a restriction of it); its own plan is that optimum unless the LP
    # wanted a vehicle to do both at once (to waste energy when full), then close to it.
    assert exact.lower_bound <= exact.objective * (1 + 1e-9)
    assert exact.gap == pytest.approx((exact.objective - exact.lower_bound) / exact.objective, abs=1e-9)
    assert exact.status == ("optimal" if exact.gap <= 1e-6 else "feasible")
    monkeypatch.setattr(domain, "EXACT_MAX_PAIRS", 0)
    monkeypatch.setattr(domain, "GROUP_SIZE", rng.choice([2, 4, 8]))
    monkeypatch.setattr(domain, "BATCH_SIZE", rng.choice([4, 9]))
    _, staged = plan(fleet, target)
    assert staged.status in ("optimal", "feasible")
    # The relaxation is a lower bound on the exact LP's optimum, hence on every plan.
    assert staged.lower_bound <= exact.lower_bound * (1 + 1e-6)
    assert staged.objective >= exact.lower_bound * (1 - 1e-6)
    assert staged.gap == pytest.approx((staged.objective - staged.lower_bound) / staged.objective, abs=1e-9)


def test_two_stage_is_exact_for_lone_vehicles(two_stage):
    v = vehicle(soc=0.5, windows=((0, 32),), targets=((32, 0.8),))
    _, result = plan([v], profile(96, {range(24, 28): 10.0}))
    assert result.status == "optimal" and result.gap <= 1e-6
    assert result.planned_kw[24:28] == pytest.approx((10.0,) * 4)


@pytest.mark.parametrize("path", ["exact", "two stages"])
def test_no_time_left_still_gives_a_valid_plan_that_meets_departures(path, monkeypatch):
    if path == "two stages":
        monkeypatch.setattr(domain, "EXACT_MAX_PAIRS", 0)
    v = vehicle(soc=0.4, windows=((0, 32),), targets=((32, 0.7),))
    inp = PlanInput(SLOTS, 15, profile(96, {range(8, 12): 5.0}), (v,))
    result = generate_plan(inp, time_limit_s=0)
    assert plan_check(inp, result) == []
    assert result.status == "feasible" and result.gap is None
    assert soc_path(v, result, 96)[32] >= 0.7 - 1e-6
    # The safe plan charges at full power from the start: 11 kW the wrong way, reported.
    assert result.shortfall_kw[8:12] == pytest.approx((16.0,) * 4)
    assert any("no time left" in m for m in result.messages)


def test_two_stage_is_deterministic(two_stage):
    fleet = random_fleet(random.Random(3), 30, 96)
    target = random_target(random.Random(4), 96, 30)
    _, first = plan(fleet, target)
    _, again = plan(random.Random(5).sample(fleet, len(fleet)), target)
    assert first.entries == again.entries and first.objective == again.objective
