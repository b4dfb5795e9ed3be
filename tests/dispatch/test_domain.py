"""Pure dispatch domain: filter, limits, strategies, fallbacks. No database."""

from __future__ import annotations

import math
import random

import pytest

from dispatch import domain
from dispatch.domain import (
    Allocation,
    Policy,
    SegmentPolicy,
    SignalSpec,
    SmartWeights,
    VehicleState,
    allocate,
    allocate_equal,
    allocate_lp,
    allocate_smart,
    balanced_threshold,
    fallback_allocate,
    policy_from_config,
    soc_floor,
    strategy_for,
    vehicle_filter,
    vehicle_limit_kw,
)

HOUR = 3600.0
TOL = 1e-6
DISCHARGE_1H = SignalSpec("FCR", 10.0, HOUR)
CHARGE_1H = SignalSpec("FCR", -10.0, HOUR)


def ev(vid: str, **fields) -> VehicleState:
    fields.setdefault("soc", 0.8)
    return VehicleState(vid, **fields)


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def assert_invariants(alloc: Allocation, signal: SignalSpec, vehicles, policy: Policy) -> None:
    """The hard invariants of every allocation."""
    by_id = {v.vehicle_id: v for v in vehicles}
    assert abs(alloc.allocated_kw + alloc.unallocated_kw - alloc.requested_kw) < TOL
    assert abs(sum(alloc.setpoints_kw.values()) - alloc.allocated_kw) < TOL
    assert alloc.unallocated_kw * sign(alloc.requested_kw) >= -TOL  # never over-allocated
    assert abs(alloc.allocated_kw) <= abs(alloc.requested_kw) + TOL
    if alloc.requested_kw == 0:
        assert alloc.setpoints_kw == {}
    for vid, sp in alloc.setpoints_kw.items():
        v = by_id[vid]
        assert sp != 0
        assert sign(sp) == sign(alloc.requested_kw) == sign(signal.power_kw)
        assert vid not in alloc.excluded
        assert round(sp, 3) == sp
        assert abs(sp) <= vehicle_limit_kw(v, signal, policy) + TOL
        rating = v.max_discharge_kw if signal.power_kw > 0 else v.max_charge_kw
        assert abs(sp) <= rating + TOL


# --- soc floor and limits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("own_min", "policy", "expected"),
    [
        (0.2, Policy(), 0.3),  # safe_discharge_floor wins
        (0.5, Policy(), 0.5),  # the vehicle's own floor wins
        (0.1, Policy(min_soc=0.4), 0.4),  # fleet-wide floor wins
        (0.2, Policy(enable_soc_constraints=False), 0.2),  # constraints off: own floor only
    ],
)
def test_soc_floor(own_min, policy, expected):
    assert soc_floor(ev("a", min_soc=own_min), policy) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("vehicle", "signal", "policy", "expected_kw"),
    [
        # 50 kWh, 0.35 -> floor 0.30 is 2.5 kWh: 2.5 kW for an hour, not 7.4
        (ev("a", soc=0.35), SignalSpec("FCR", 10, HOUR), Policy(), 2.5),
        # same energy over 15 minutes is 10 kW: capped at the 7.4 kW rating
        (ev("a", soc=0.35), SignalSpec("FCR", 10, 900), Policy(), 7.4),
        (ev("a", soc=0.9), SignalSpec("FCR", 10, HOUR), Policy(), 7.4),
        (ev("a", soc=0.9, max_discharge_kw=22), SignalSpec("FCR", 10, 4 * HOUR), Policy(), 7.5),
        # charge: (1 - 0.9) * 50 kWh = 5 kWh over an hour
        (ev("a", soc=0.9), SignalSpec("FCR", -10, HOUR), Policy(), 5.0),
        (ev("a", soc=0.5, max_charge_kw=11), SignalSpec("FCR", -10, HOUR), Policy(), 11.0),
        (ev("a", soc=0.2), SignalSpec("FCR", 10, HOUR), Policy(), 0.0),  # below floor: 0, never negative
        (ev("a", soc=None), SignalSpec("FCR", 10, HOUR), Policy(), 0.0),  # unknown SoC under constraints
        (ev("a", soc=None), SignalSpec("FCR", 10, HOUR), Policy(enable_soc_constraints=False), 7.4),
        (ev("a", soc=0.1), SignalSpec("FCR", 10, HOUR), Policy(enable_soc_constraints=False), 7.4),
        (ev("a", max_discharge_kw=-3), SignalSpec("FCR", 10, HOUR), Policy(), 0.0),
    ],
)
def test_vehicle_limit_kw(vehicle, signal, policy, expected_kw):
    assert vehicle_limit_kw(vehicle, signal, policy) == pytest.approx(expected_kw)


# --- filter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "signal", "policy", "reason"),
    [
        ({}, DISCHARGE_1H, Policy(), None),
        ({"active": False, "is_v2g": False}, DISCHARGE_1H, Policy(), "inactive"),
        ({"is_v2g": False}, DISCHARGE_1H, Policy(), "not V2G capable"),
        ({"is_v2g": False}, CHARGE_1H, Policy(), None),  # any vehicle can absorb power
        ({"available": False}, DISCHARGE_1H, Policy(), "unavailable"),
        ({"available": False}, CHARGE_1H, Policy(), "unavailable"),
        ({"committed": True}, DISCHARGE_1H, Policy(), "committed to another signal"),
        ({"soc": None}, DISCHARGE_1H, Policy(), "SoC unknown"),
        ({"soc": None}, CHARGE_1H, Policy(), "SoC unknown"),
        ({"soc": 0.25}, DISCHARGE_1H, Policy(), "SoC 0.25 at or below floor 0.30"),
        ({"soc": 0.30}, DISCHARGE_1H, Policy(), "SoC 0.30 at or below floor 0.30"),
        ({"soc": 0.35, "min_soc": 0.4}, DISCHARGE_1H, Policy(), "SoC 0.35 at or below floor 0.40"),
        ({"soc": 0.25}, CHARGE_1H, Policy(), None),  # low SoC is fine for charging
        ({"soc": 1.0}, CHARGE_1H, Policy(), "SoC 1.00 full"),
        ({"max_discharge_kw": 0.0}, DISCHARGE_1H, Policy(), "no discharge power rating"),
        ({"max_charge_kw": 0.0}, CHARGE_1H, Policy(), "no charge power rating"),
        ({"max_charge_kw": 0.0}, DISCHARGE_1H, Policy(), None),
        ({"soc": None}, DISCHARGE_1H, Policy(enable_soc_constraints=False), None),
        ({"soc": 0.1}, DISCHARGE_1H, Policy(enable_soc_constraints=False), None),
    ],
)
def test_vehicle_filter_reasons(fields, signal, policy, reason):
    vehicle = ev("a", **fields)
    eligible, excluded = vehicle_filter([vehicle], signal, policy)
    if reason is None:
        assert (eligible, excluded) == ([vehicle], {})
    else:
        assert (eligible, excluded) == ([], {"a": reason})


def test_filter_excludes_energy_below_one_watt_over_the_duration():
    # 0.00001 * 50 kWh over an hour is 0.5 W: it cannot carry a 0.001 kW setpoint
    _, excluded = vehicle_filter([ev("a", soc=0.30001)], DISCHARGE_1H, Policy())
    assert excluded["a"].startswith("available power 0.0005 kW below 0.001 kW")


def test_filter_keeps_input_order_and_rejects_duplicate_ids():
    vehicles = [ev("b"), ev("c", available=False), ev("a")]
    eligible, excluded = vehicle_filter(vehicles, DISCHARGE_1H, Policy())
    assert [v.vehicle_id for v in eligible] == ["b", "a"]
    assert excluded == {"c": "unavailable"}
    with pytest.raises(ValueError, match="duplicate vehicle id 'a'"):
        vehicle_filter([ev("a"), ev("a")], DISCHARGE_1H, Policy())


# --- strategy selection and policy ------------------------------------------------------

SEGMENTED = Policy(
    default_strategy="equal",
    strategies={"NEBEF": "smart"},
    lp_first=frozenset({"mFRR"}),
    segments={"buses": SegmentPolicy(strategy="lp"), "vans": SegmentPolicy(weights=SmartWeights(1, 0, 0))},
)


@pytest.mark.parametrize(
    ("signal_type", "segment", "expected"),
    [
        ("FCR", "", "equal"),  # default_strategy
        ("NEBEF", "", "smart"),  # per signal type
        ("mFRR", "", "lp"),  # lp_first
        ("mFRR", "vans", "lp"),  # segment without a strategy of its own
        ("NEBEF", "buses", "lp"),  # segment strategy wins over the signal type
        ("NEBEF", "vans", "smart"),
        ("FCR", "unknown-segment", "equal"),
    ],
)
def test_strategy_for(signal_type, segment, expected):
    assert strategy_for(signal_type, segment, SEGMENTED) == expected


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Policy(default_strategy="fast"), "unknown strategy 'fast'"),
        (lambda: Policy(strategies={"FCR": "greedy"}), r"strategies\[FCR\]"),
        (lambda: Policy(fallback="retry"), "unknown fallback 'retry'"),
        (lambda: Policy(min_soc=1.5), "min_soc must be a fraction"),
        (lambda: SegmentPolicy(strategy="x"), "unknown strategy 'x'"),
        (lambda: SmartWeights(soc=-1), "smart weight soc"),
        (lambda: SignalSpec("FCR", 10, 0), "duration_s must be > 0"),
        (lambda: SignalSpec("FCR", math.nan, 60), "power_kw must be finite"),
    ],
)
def test_bad_settings_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_policy_from_config_section():
    policy = policy_from_config(
        {
            "ack_timeout_seconds": 10.0,
            "default_strategy": "smart",
            "strategies": {"FCR": "equal"},
            "lp_first": ["NEBEF"],
            "fallback": "probabilistic",
            "enable_soc_constraints": False,
            "min_soc": 0.25,
            "safe_discharge_floor": 0.35,
            "smart_weights": {"soc": 0.6, "availability": 0.3, "fairness": 0.1},
            "segments": {
                "buses": {"strategy": "lp", "weights": None},
                "vans": {"strategy": None, "weights": {"soc": 1, "availability": 0, "fairness": 0}},
            },
        }
    )
    assert policy == Policy(
        enable_soc_constraints=False,
        min_soc=0.25,
        safe_discharge_floor=0.35,
        default_strategy="smart",
        strategies={"FCR": "equal"},
        lp_first=frozenset({"NEBEF"}),
        smart_weights=SmartWeights(0.6, 0.3, 0.1),
        segments={"buses": SegmentPolicy("lp"), "vans": SegmentPolicy(None, SmartWeights(1.0, 0.0, 0.0))},
        fallback="probabilistic",
    )


# --- equal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_kw", "limits", "expected"),
    [
        # capped vehicle keeps its 2 kW, the remainder is re-split
        (10, {"a": 2, "b": 7.4, "c": 7.4}, {"a": 2, "b": 4, "c": 4}),
        (30, {"a": 2, "b": 7.4, "c": 7.4}, {"a": 2, "b": 7.4, "c": 7.4}),  # over-request: all capped
        (-10, {"a": 2, "b": 7.4, "c": 7.4}, {"a": -2, "b": -4, "c": -4}),  # charging
        # 1 W resolution, largest remainder: the total is exact, ties go to the lower id
        (10, {"c": 7.4, "b": 7.4, "a": 7.4}, {"a": 3.334, "b": 3.333, "c": 3.333}),
        (1, {"a": 0, "b": 5}, {"b": 1}),  # zero limits get nothing
        (0, {"a": 5}, {}),
        (0.0004, {"a": 5}, {}),  # below the resolution: zero setpoints are dropped
        (5, {}, {}),
    ],
)
def test_allocate_equal(request_kw, limits, expected):
    assert allocate_equal(request_kw, limits) == pytest.approx(expected)


def test_equal_allocation_soc_floor_limits_the_vehicle_over_the_duration():
    vehicles = [ev("low", soc=0.35), ev("high", soc=0.9)]
    alloc = allocate(SignalSpec("FCR", 9.9, HOUR), vehicles, Policy())
    # "low" can give only 2.5 kW for an hour; "high" takes the rest up to its rating
    assert alloc.setpoints_kw == {"high": 7.4, "low": 2.5}
    assert (alloc.strategy, alloc.allocated_kw, alloc.unallocated_kw) == ("equal", 9.9, 0.0)
    assert alloc.scores == {"high": 1.0, "low": 1.0}


def test_over_request_is_reported_as_unallocated():
    vehicles = [ev("a"), ev("b", max_discharge_kw=11), ev("c", is_v2g=False)]
    signal = SignalSpec("mFRR", 100, HOUR)
    alloc = allocate(signal, vehicles, Policy())
    assert alloc.setpoints_kw == {"a": 7.4, "b": 11.0}
    assert alloc.allocated_kw == pytest.approx(18.4)
    assert alloc.unallocated_kw == pytest.approx(81.6)
    assert alloc.excluded == {"c": "not V2G capable"}
    assert_invariants(alloc, signal, vehicles, Policy())


def test_no_eligible_vehicle_leaves_everything_unallocated():
    alloc = allocate(DISCHARGE_1H, [ev("a", available=False)], Policy())
    assert (alloc.setpoints_kw, alloc.allocated_kw, alloc.unallocated_kw) == ({}, 0.0, 10.0)
    assert alloc.excluded == {"a": "unavailable"}


@pytest.mark.parametrize("strategy", ["equal", "smart", "lp"])
def test_zero_power_signal_allocates_nothing(strategy):
    alloc = allocate(SignalSpec("FCR", 0.0, HOUR), [ev("a"), ev("b")], Policy(), strategy=strategy)
    assert alloc == Allocation({}, {}, strategy, 0.0, 0.0, 0.0, {})


# --- smart ---------------------------------------------------------------------------


def test_smart_prefers_high_soc_and_low_participation():
    weights = SmartWeights()
    vehicles = [ev("full", soc=0.95), ev("half", soc=0.55), ev("used", soc=0.95, participation=20)]
    limits = dict.fromkeys(["full", "half", "used"], 7.4)
    setpoints, scores = allocate_smart(10, vehicles, limits, weights, policy=Policy())
    assert scores["full"] > scores["used"] > scores["half"]
    assert setpoints["full"] > setpoints["used"] > setpoints["half"] > 0
    assert sum(setpoints.values()) == pytest.approx(10)


def test_smart_saturates_best_vehicles_and_resplits_the_remainder():
    vehicles = [ev("a", soc=1.0), ev("b", soc=0.31)]
    setpoints, _ = allocate_smart(10, vehicles, {"a": 7.4, "b": 7.4}, SmartWeights(1, 0, 0), policy=Policy())
    assert setpoints == {"a": 7.4, "b": 2.6}


def test_smart_charging_prefers_low_soc():
    vehicles = [ev("empty", soc=0.1), ev("nearly-full", soc=0.9)]
    setpoints, _ = allocate_smart(-5, vehicles, {"empty": 7.4, "nearly-full": 7.4}, SmartWeights(1, 0, 0))
    assert setpoints["empty"] < setpoints["nearly-full"] < 0
    assert sum(setpoints.values()) == pytest.approx(-5)


def test_priority_breaks_ties_only():
    vehicles = [ev("a"), ev("b", priority=3)]
    setpoints, scores = allocate_smart(5, vehicles, {"a": 7.4, "b": 7.4}, SmartWeights())
    assert scores["b"] - scores["a"] == pytest.approx(0.00075)
    assert setpoints["b"] >= setpoints["a"]
    # a real SoC difference outweighs any priority
    vehicles = [ev("a", soc=0.9), ev("b", soc=0.8, priority=30_000)]
    _, scores = allocate_smart(5, vehicles, {"a": 7.4, "b": 7.4}, SmartWeights(), policy=Policy())
    assert scores["a"] > scores["b"]


def test_smart_uses_each_segments_weights():
    policy = Policy(
        default_strategy="smart",
        segments={
            "soc-first": SegmentPolicy(weights=SmartWeights(soc=1, availability=0, fairness=0)),
            "fair-first": SegmentPolicy(weights=SmartWeights(soc=0, availability=0, fairness=1)),
        },
    )
    vehicles = [
        ev("s-high-soc-busy", segment="soc-first", soc=0.9, participation=10),
        ev("s-low-soc-idle", segment="soc-first", soc=0.5, participation=0),
        ev("f-high-soc-busy", segment="fair-first", soc=0.9, participation=10),
        ev("f-low-soc-idle", segment="fair-first", soc=0.5, participation=0),
    ]
    signal = SignalSpec("NEBEF", 8, HOUR)
    alloc = allocate(signal, vehicles, policy)
    sp = alloc.setpoints_kw
    assert alloc.strategy == "smart"
    assert sp["s-high-soc-busy"] > sp["s-low-soc-idle"]
    assert sp["f-low-soc-idle"] > sp["f-high-soc-busy"]
    assert alloc.allocated_kw == pytest.approx(8)
    assert_invariants(alloc, signal, vehicles, policy)


# --- lp ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_kw", "expected_total"),
    [(5.0, 5.0), (12.0, 12.0), (40.0, 7.4 + 7.4 + 3.7), (-6.0, -6.0)],
)
def test_lp_delivers_the_capped_total(request_kw, expected_total):
    vehicles = [ev("a", soc=0.9), ev("b", soc=0.6), ev("c", soc=0.7)]
    limits = {"a": 7.4, "b": 7.4, "c": 3.7}
    setpoints = allocate_lp(request_kw, vehicles, limits, SmartWeights(), policy=Policy())
    assert setpoints is not None
    assert sum(setpoints.values()) == pytest.approx(expected_total)
    for vid, sp in setpoints.items():
        assert abs(sp) <= limits[vid] + TOL
        assert sign(sp) == sign(request_kw)


def test_lp_fills_the_best_scored_vehicles_first():
    vehicles = [ev("low", soc=0.5), ev("high", soc=0.95), ev("busy", soc=0.95, participation=50)]
    limits = dict.fromkeys(["low", "high", "busy"], 7.4)
    setpoints = allocate_lp(10, vehicles, limits, SmartWeights(), policy=Policy())
    assert setpoints == {"high": 7.4, "busy": 2.6}


def test_lp_first_uses_lp_when_it_solves():
    policy = Policy(lp_first=frozenset({"NEBEF"}))
    vehicles = [ev("low", soc=0.5), ev("high", soc=0.95)]
    alloc = allocate(SignalSpec("NEBEF", 7.4, HOUR), vehicles, policy)
    assert (alloc.strategy, alloc.setpoints_kw) == ("lp", {"high": 7.4})


def test_lp_first_falls_back_to_smart_when_lp_fails(monkeypatch):
    monkeypatch.setattr(domain, "allocate_lp", lambda *args, **kwargs: None)
    policy = Policy(lp_first=frozenset({"NEBEF"}))
    vehicles = [ev("low", soc=0.5), ev("high", soc=0.95)]
    signal = SignalSpec("NEBEF", 7.4, HOUR)
    alloc = allocate(signal, vehicles, policy)
    smart = allocate(signal, vehicles, policy, strategy="smart")
    assert alloc.strategy == "smart"
    assert alloc.setpoints_kw == smart.setpoints_kw
    assert alloc.allocated_kw == pytest.approx(7.4)


def test_lp_without_scipy_returns_none(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert allocate_lp(5, [ev("a")], {"a": 7.4}, SmartWeights()) is None


# --- charging and segments -------------------------------------------------------------


def test_charging_signal_uses_non_v2g_vehicles_and_charge_limits():
    vehicles = [
        ev("plain", is_v2g=False, soc=0.5),
        ev("almost-full", soc=0.95),  # (1 - 0.95) * 50 kWh = 2.5 kW for an hour
        ev("full", soc=1.0),
        ev("gone", available=False),
    ]
    signal = SignalSpec("EcoWatt", -8, HOUR)
    alloc = allocate(signal, vehicles, Policy())
    assert alloc.setpoints_kw == {"almost-full": -2.5, "plain": -5.5}
    assert (alloc.allocated_kw, alloc.unallocated_kw) == (-8.0, 0.0)
    assert alloc.excluded == {"full": "SoC 1.00 full", "gone": "unavailable"}
    assert_invariants(alloc, signal, vehicles, Policy())


def _two_segment_fleet():
    policy = Policy(segments={"a": SegmentPolicy(strategy="equal"), "b": SegmentPolicy(strategy="lp")})
    vehicles = [
        ev("a1", segment="a"),
        ev("a2", segment="a"),
        ev("b-low", segment="b", soc=0.5),
        ev("b-high", segment="b", soc=0.95),
    ]
    return policy, vehicles


def test_segments_with_different_strategies_share_the_request_by_capacity():
    policy, vehicles = _two_segment_fleet()
    signal = SignalSpec("FCR", 11.1, HOUR)
    alloc = allocate(signal, vehicles, policy)
    # each segment holds half the capacity: 5.55 kW each; equal in "a", lp in "b"
    assert alloc.setpoints_kw == {"a1": 2.775, "a2": 2.775, "b-high": 5.55}
    assert alloc.strategy == "mixed"
    assert alloc.segment_strategies == {"a": "equal", "b": "lp"}
    assert alloc.scores["a1"] == 1.0
    assert alloc.scores["b-high"] > alloc.scores["b-low"]
    assert_invariants(alloc, signal, vehicles, policy)


def test_segment_remainder_is_resplit_over_the_other_vehicles_headroom(monkeypatch):
    # an lp that delivers nothing (but does not fail) leaves segment "b" short
    monkeypatch.setattr(domain, "allocate_lp", lambda *args, **kwargs: {})
    policy, vehicles = _two_segment_fleet()
    signal = SignalSpec("FCR", 11.1, HOUR)
    alloc = allocate(signal, vehicles, policy)
    # 5.55 kW left over, split equally over 4.625 + 4.625 + 7.4 + 7.4 kW of headroom
    expected = {"a1": 4.1625, "a2": 4.1625, "b-high": 1.3875, "b-low": 1.3875}
    assert alloc.setpoints_kw == pytest.approx(expected, abs=0.001)  # to 1 W
    assert alloc.allocated_kw == pytest.approx(11.1)
    assert_invariants(alloc, signal, vehicles, policy)


def test_lp_failure_in_one_segment_falls_back_to_smart(monkeypatch):
    monkeypatch.setattr(domain, "allocate_lp", lambda *args, **kwargs: None)
    policy, vehicles = _two_segment_fleet()
    alloc = allocate(SignalSpec("FCR", 11.1, HOUR), vehicles, policy)
    assert alloc.segment_strategies == {"a": "equal", "b": "smart"}
    assert alloc.allocated_kw == pytest.approx(11.1)


def test_explicit_strategy_overrides_segments():
    policy, vehicles = _two_segment_fleet()
    alloc = allocate(SignalSpec("FCR", 8, HOUR), vehicles, policy, strategy="equal")
    assert alloc.strategy == "equal"
    assert alloc.setpoints_kw == dict.fromkeys(["a1", "a2", "b-high", "b-low"], 2.0)


# --- fallbacks -----------------------------------------------------------------------


def test_noop_fallback_redispatches_nothing():
    policy = Policy(fallback="noop")
    alloc = fallback_allocate(5, DISCHARGE_1H, {"a": 5}, [ev("a"), ev("b")], policy, rng=random.Random(1))
    assert alloc == Allocation({}, {}, "noop", 5.0, 0.0, 5.0, {})


@pytest.mark.parametrize("shortfall", [0.0, -3.0])
def test_fallback_without_a_shortfall_in_the_signal_direction_does_nothing(shortfall):
    alloc = fallback_allocate(shortfall, DISCHARGE_1H, {}, [ev("a")], Policy(), rng=random.Random(1))
    assert (alloc.setpoints_kw, alloc.allocated_kw, alloc.unallocated_kw) == ({}, 0.0, shortfall)


def test_balanced_tops_up_acked_vehicles_by_headroom_and_soc():
    vehicles = [ev("full", soc=0.95), ev("half", soc=0.6), ev("lost", soc=0.9), ev("idle", soc=0.9)]
    acked = {"full": 3.0, "half": 3.0}
    alloc = fallback_allocate(
        4.0, DISCHARGE_1H, acked, vehicles, Policy(), rng=random.Random(1), failed={"lost"}
    )
    sp = alloc.setpoints_kw
    extra = {vid: sp[vid] - acked[vid] for vid in acked}
    assert extra["full"] > extra["half"] > 0  # same headroom, higher SoC gets more
    assert sum(extra.values()) == pytest.approx(4.0)
    assert set(sp) == {"full", "half"}  # absolute setpoints; the other vehicles are not needed
    assert (alloc.strategy, alloc.allocated_kw, alloc.unallocated_kw) == ("balanced", 4.0, 0.0)
    assert alloc.excluded == {"lost": "did not acknowledge in this signal"}


def test_balanced_sends_what_acked_vehicles_cannot_take_to_the_others():
    vehicles = [ev("acked"), ev("c"), ev("d"), ev("e", available=False)]
    alloc = fallback_allocate(5.0, DISCHARGE_1H, {"acked": 7.0}, vehicles, Policy(), rng=random.Random(1))
    # 0.4 kW of headroom on the acked vehicle, the other 4.6 kW split equally
    assert alloc.setpoints_kw == {"acked": 7.4, "c": 2.3, "d": 2.3}
    assert (alloc.allocated_kw, alloc.unallocated_kw) == (pytest.approx(5.0), 0.0)
    assert alloc.excluded == {"e": "unavailable"}


def test_balanced_reports_what_nobody_can_take():
    alloc = fallback_allocate(
        20.0, DISCHARGE_1H, {"a": 7.0}, [ev("a"), ev("b")], Policy(), rng=random.Random(1)
    )
    assert alloc.setpoints_kw == {"a": 7.4, "b": 7.4}
    assert alloc.allocated_kw == pytest.approx(7.8)
    assert alloc.unallocated_kw == pytest.approx(12.2)


@pytest.mark.parametrize(
    ("soc", "own_min", "skipped"),
    [
        (0.25, 0.2, False),  # own minimum set lower than 30 %: it applies
        (0.25, 0.3, True),
        (0.25, 0.4, True),  # otherwise the 30 % threshold applies
        (0.31, 0.4, False),
        (0.29, 0.29, False),
        (None, 0.2, True),  # unknown SoC: not topped up
    ],
)
def test_balanced_soc_threshold(soc, own_min, skipped):
    # constraints off, so only the balanced rule stands between the vehicle and more discharge
    policy = Policy(enable_soc_constraints=False)
    vehicle = ev("a", soc=soc, min_soc=own_min)
    assert balanced_threshold(vehicle, policy) == min(own_min, 0.3)
    alloc = fallback_allocate(2.0, DISCHARGE_1H, {"a": 1.0}, [vehicle], policy, rng=random.Random(1))
    assert (alloc.setpoints_kw == {}) is skipped
    if skipped:
        assert "a" in alloc.excluded
    else:
        assert alloc.setpoints_kw == {"a": 3.0}


def test_balanced_soc_threshold_does_not_apply_to_charging():
    signal = SignalSpec("FCR", -10, HOUR)
    alloc = fallback_allocate(-2.0, signal, {"a": -1.0}, [ev("a", soc=0.1)], Policy(), rng=random.Random(1))
    assert alloc.setpoints_kw == {"a": -3.0}


def test_probabilistic_fills_unacked_candidates_up_to_their_limits():
    policy = Policy(fallback="probabilistic")
    vehicles = [ev("acked"), ev("lost"), ev("b"), ev("c"), ev("d", ack_rate=0.0)]
    alloc = fallback_allocate(
        10.0, DISCHARGE_1H, {"acked": 5.0}, vehicles, policy, rng=random.Random(7), failed={"lost"}
    )
    assert sorted(alloc.setpoints_kw.values()) == [2.6, 7.4]
    assert set(alloc.setpoints_kw) == {"b", "c"}  # the never-acking vehicle comes last
    assert (alloc.strategy, alloc.allocated_kw, alloc.unallocated_kw) == ("probabilistic", 10.0, 0.0)
    assert alloc.excluded == {"lost": "did not acknowledge in this signal"}


def test_probabilistic_is_deterministic_with_a_seeded_rng_and_any_input_order():
    policy = Policy(fallback="probabilistic")
    vehicles = [ev(f"v{i}", ack_rate=i / 10) for i in range(1, 10)]
    first = fallback_allocate(10.0, DISCHARGE_1H, {}, vehicles, policy, rng=random.Random(42))
    again = fallback_allocate(10.0, DISCHARGE_1H, {}, vehicles[::-1], policy, rng=random.Random(42))
    assert first == again


def test_probabilistic_prefers_vehicles_that_usually_ack():
    policy = Policy(fallback="probabilistic")
    vehicles = [ev("reliable", ack_rate=0.9), ev("flaky", ack_rate=0.1)]
    wins = 0
    for seed in range(400):
        alloc = fallback_allocate(5.0, DISCHARGE_1H, {}, vehicles, policy, rng=random.Random(seed))
        wins += alloc.setpoints_kw == {"reliable": 5.0}
    assert wins / 400 > 0.8  # expected 0.9


# --- invariants over random fleets ---------------------------------------------------------


def random_vehicle(rnd: random.Random, vid: str) -> VehicleState:
    return VehicleState(
        vehicle_id=vid,
        segment=rnd.choice(["", "a", "b", "c"]),
        is_v2g=rnd.random() < 0.85,
        active=rnd.random() < 0.95,
        available=rnd.random() < 0.9,
        soc=None if rnd.random() < 0.05 else rnd.choice([0.0, 1.0, rnd.random(), rnd.uniform(0.28, 0.35)]),
        battery_kwh=rnd.uniform(20, 100),
        max_charge_kw=rnd.choice([0.0, 3.7, 7.4, 11.0, 22.0, rnd.uniform(0, 50)]),
        max_discharge_kw=rnd.choice([0.0, 3.7, 7.4, 11.0, 22.0, rnd.uniform(0, 50)]),
        min_soc=rnd.uniform(0.05, 0.5),
        priority=rnd.randint(-3, 3),
        committed=rnd.random() < 0.05,
        participation=rnd.choice([0.0, rnd.uniform(0, 30)]),
        availability=rnd.random(),
        ack_rate=rnd.random(),
    )


def random_weights(rnd: random.Random) -> SmartWeights:
    return SmartWeights(rnd.choice([0, rnd.random()]), rnd.choice([0, rnd.random()]), rnd.random())


def random_policy(rnd: random.Random) -> Policy:
    strategies = sorted(domain.STRATEGIES)
    return Policy(
        enable_soc_constraints=rnd.random() < 0.8,
        min_soc=rnd.uniform(0, 0.4),
        safe_discharge_floor=rnd.uniform(0, 0.5),
        default_strategy=rnd.choice(strategies),
        strategies={"FCR": rnd.choice(strategies)},
        lp_first=frozenset(rnd.sample(["aFRR", "NEBEF"], rnd.randint(0, 2))),
        smart_weights=random_weights(rnd),
        segments={
            seg: SegmentPolicy(
                strategy=rnd.choice([None, *strategies]),
                weights=rnd.choice([None, random_weights(rnd)]),
            )
            for seg in rnd.sample(["a", "b", "c"], rnd.randint(0, 3))
        },
        fallback=rnd.choice(sorted(domain.FALLBACKS)),
    )


def random_signal(rnd: random.Random) -> SignalSpec:
    power = rnd.choice([0.0, rnd.uniform(-300, 300), rnd.uniform(-5, 5), round(rnd.uniform(-50, 50), 3)])
    return SignalSpec(
        rnd.choice(["FCR", "aFRR", "mFRR", "NEBEF", "EcoWatt"]), power, rnd.choice([60, 900, 3600, 4 * 3600])
    )


def test_invariants_hold_over_random_fleets():
    rnd = random.Random(20240601)
    for _ in range(300):
        vehicles = [random_vehicle(rnd, f"ev-{i:03d}") for i in rnd.sample(range(500), rnd.randint(0, 60))]
        policy = random_policy(rnd)
        signal = random_signal(rnd)
        strategy = rnd.choice([None, None, *sorted(domain.STRATEGIES)])

        alloc = allocate(signal, vehicles, policy, strategy=strategy)
        assert_invariants(alloc, signal, vehicles, policy)
        if signal.power_kw != 0:
            eligible, excluded = vehicle_filter(vehicles, signal, policy)
            assert alloc.excluded == excluded
            assert set(alloc.setpoints_kw) <= {v.vehicle_id for v in eligible}
            # nothing hidden: whatever the fleet can take of the request is taken (to 1 W per vehicle)
            capacity = sum(math.floor(vehicle_limit_kw(v, signal, policy) * 1000 + 1e-6) for v in eligible)
            coverable = min(abs(signal.power_kw), capacity / 1000)
            assert abs(alloc.allocated_kw) >= coverable - 0.001 * (1 + len(eligible))
        # deterministic, whatever the input order
        shuffled = vehicles[:]
        rnd.shuffle(shuffled)
        assert allocate(signal, shuffled, policy, strategy=strategy) == alloc

        # pretend some vehicles acked, re-dispatch the rest
        acked = {vid: sp for vid, sp in alloc.setpoints_kw.items() if rnd.random() < 0.6}
        failed = set(alloc.setpoints_kw) - set(acked)
        shortfall = alloc.requested_kw - sum(acked.values())
        seed = rnd.randrange(1 << 30)
        fb = fallback_allocate(
            shortfall, signal, acked, vehicles, policy, rng=random.Random(seed), failed=failed
        )
        assert abs(fb.allocated_kw + fb.unallocated_kw - fb.requested_kw) < TOL
        assert fb.unallocated_kw * sign(shortfall) >= -TOL
        extra_total = 0.0
        by_id = {v.vehicle_id: v for v in vehicles}
        for vid, sp in fb.setpoints_kw.items():
            assert vid not in failed and vid not in fb.excluded
            assert sign(sp) == sign(signal.power_kw)
            assert abs(sp) <= vehicle_limit_kw(by_id[vid], signal, policy) + TOL
            extra = sp - acked.get(vid, 0.0)
            assert sign(extra) == sign(signal.power_kw)
            extra_total += extra
        assert abs(extra_total - fb.allocated_kw) < TOL
        assert (
            fallback_allocate(
                shortfall, signal, acked, shuffled, policy, rng=random.Random(seed), failed=failed
            )
            == fb
        )


def test_setpoints_never_exceed_the_request_after_rounding():
    # 20 kW over 3 vehicles is 6.6667 each: rounding must not hand out 20.001 kW
    alloc = allocate(SignalSpec("FCR", 20, HOUR), [ev("a"), ev("b"), ev("c")], Policy())
    assert sorted(alloc.setpoints_kw.values()) == [6.666, 6.667, 6.667]
    assert alloc.allocated_kw == pytest.approx(20.0)
    assert alloc.unallocated_kw == 0.0
