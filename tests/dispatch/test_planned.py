"""Planned setpoints (a day-ahead plan's slot): dispatched as given, checked
against the vehicles as they are at execution time. The domain first (no
database), then through the dispatch services."""

from __future__ import annotations

import pytest
from django.utils import timezone

from dispatch import services
from dispatch.domain import PLANNED, Policy, SignalSpec, VehicleState, allocate_planned
from dispatch.models import Command, Dispatch, DispatchStatus
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState as LatestState

QUARTER = 900.0
POLICY = Policy(min_soc=0.2, safe_discharge_floor=0.3)


def ev(vid: str, **fields) -> VehicleState:
    fields.setdefault("soc", 0.8)
    return VehicleState(vid, **fields)


def test_the_planned_vehicles_get_exactly_their_setpoints_others_nothing():
    fleet = [ev("a"), ev("b"), ev("c"), ev("d")]
    alloc = allocate_planned(SignalSpec("NEBEF", 9.5, QUARTER), fleet, POLICY, {"b": 7.0, "a": 2.5})
    assert alloc.setpoints_kw == {"a": 2.5, "b": 7.0}
    assert alloc.strategy == PLANNED
    assert (alloc.requested_kw, alloc.allocated_kw, alloc.unallocated_kw) == (9.5, 9.5, 0.0)
    assert alloc.excluded == {}


def test_a_plan_may_charge_some_vehicles_while_others_discharge():
    fleet = [ev("up"), ev("down", soc=0.4, is_v2g=False)]  # charging needs no V2G charger
    alloc = allocate_planned(SignalSpec("NEBEF", 4.0, QUARTER), fleet, POLICY, {"up": 7.0, "down": -3.0})
    assert alloc.setpoints_kw == {"up": 7.0, "down": -3.0}
    assert alloc.allocated_kw == pytest.approx(4.0)


def test_unavailable_unknown_and_floor_vehicles_are_excluded_and_their_power_left_unallocated():
    fleet = [
        ev("ok"),
        ev("gone", available=False),
        ev("low", soc=0.3),  # at the safe-discharge floor
        ev("busy", committed=True),
        ev("not-v2g", is_v2g=False),
    ]
    planned = {"ok": 5.0, "gone": 5.0, "low": 5.0, "busy": 5.0, "not-v2g": 5.0, "stranger": 5.0}
    alloc = allocate_planned(SignalSpec("NEBEF", 30.0, QUARTER), fleet, POLICY, planned)
    assert alloc.setpoints_kw == {"ok": 5.0}
    assert alloc.excluded == {
        "gone": "unavailable",
        "low": "SoC 0.30 at or below floor 0.30",
        "busy": "committed to another signal",
        "not-v2g": "not V2G capable",
        "stranger": "planned, but not an active vehicle of the signal's fleet",
    }
    assert (alloc.allocated_kw, alloc.unallocated_kw) == (5.0, 25.0)


def test_a_setpoint_above_what_the_vehicle_can_do_now_is_capped():
    # 7.4 kW rating; 0.31 -> floor 0.3 of 50 kWh leaves 0.5 kWh: 2 kW for a quarter-hour.
    fleet = [ev("a", max_discharge_kw=7.4), ev("b", soc=0.31, battery_kwh=50.0)]
    alloc = allocate_planned(SignalSpec("NEBEF", 17.0, QUARTER), fleet, POLICY, {"a": 10.0, "b": 7.0})
    assert alloc.setpoints_kw == {"a": 7.4, "b": 2.0}
    assert alloc.unallocated_kw == pytest.approx(7.6)


def test_zero_setpoints_are_dropped_and_the_result_does_not_depend_on_order():
    fleet = [ev("a"), ev("b"), ev("c")]
    one = allocate_planned(SignalSpec("NEBEF", 3.0, QUARTER), fleet, POLICY, {"c": 1.0, "a": 2.0, "b": 0.0})
    two = allocate_planned(
        SignalSpec("NEBEF", 3.0, QUARTER), list(reversed(fleet)), POLICY, {"b": 0.0, "a": 2.0, "c": 1.0}
    )
    assert one == two
    assert list(one.setpoints_kw) == ["a", "c"]


# --- through the dispatch services (database; the tasks they enqueue do not run here) ---------


@pytest.fixture
def fleet_states():
    fleet = Fleet.objects.create(id="f", name="F")
    now = timezone.now()
    for vid, plugged in (("a", True), ("b", True), ("away", False)):
        v = Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=10)
        LatestState.objects.create(vehicle=v, soc=0.8, plugged_in=plugged, reported_at=now, received_at=now)
    return fleet


@pytest.mark.django_db
def test_a_planned_signal_is_allocated_as_planned(fleet_states):
    _signal, dispatch = services.signal_submit(
        signal_type="NEBEF", power_kw=6.0, duration_s=900, setpoints_kw={"a": 4.0, "b": 2.0}, source="plan"
    )
    assert services.dispatch_allocate(dispatch.id) == "allocated"
    dispatch = Dispatch.objects.get(id=dispatch.id)
    assert (dispatch.strategy, dispatch.allocated_kw, dispatch.excluded) == ("planned", 6.0, {})
    assert dict(Command.objects.values_list("vehicle_id", "power_kw")) == {"a": 4.0, "b": 2.0}


@pytest.mark.django_db
def test_when_no_planned_vehicle_can_take_its_setpoint_fallback_opens_at_once(fleet_states):
    signal, dispatch = services.signal_submit(
        signal_type="NEBEF", power_kw=5.0, duration_s=900, setpoints_kw={"away": 5.0}, source="plan"
    )
    assert services.dispatch_allocate(dispatch.id) == DispatchStatus.NO_VEHICLES
    assert Dispatch.objects.get(id=dispatch.id).excluded == {"away": "unavailable"}
    fallback = Dispatch.objects.get(signal=signal, round=1)
    assert (fallback.target_kw, fallback.status) == (5.0, DispatchStatus.PENDING)
    assert services.dispatch_allocate(fallback.id) == "allocated"  # the others take it
    assert Dispatch.objects.get(id=fallback.id).allocated_kw == 5.0


@pytest.mark.django_db
def test_planned_setpoints_are_checked_on_submission(fleet_states):

    with pytest.raises(services.SignalRejected, match=r"power_kw: must be the sum of setpoints_kw, 6\.000"):
        services.signal_submit(signal_type="NEBEF", power_kw=5.0, duration_s=900, setpoints_kw={"a": 6.0})
    with pytest.raises(services.SignalRejected, match="setpoints_kw: must map at least one vehicle"):
        services.signal_submit(signal_type="NEBEF", power_kw=0.0, duration_s=900, setpoints_kw={})
    with pytest.raises(services.SignalRejected, match="setpoints_kw: a: must be a finite number"):
        services.signal_submit(
            signal_type="NEBEF", power_kw=0.0, duration_s=900, setpoints_kw={"a": float("nan")}
        )
