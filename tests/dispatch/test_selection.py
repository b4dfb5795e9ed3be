"""Signals restricted to an operator's selection of vehicles (``vehicle_ids``),
and the operator's re-run of fallback for a dispatch (issue 12)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from dispatch import domain, services
from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from tests.conftest import replace


def ev(vid: str) -> domain.VehicleState:
    return domain.VehicleState(vehicle_id=vid, soc=0.8, max_discharge_kw=10, max_charge_kw=10)


def test_only_the_selected_vehicles_are_eligible_and_the_others_say_why():
    signal = domain.SignalSpec("FCR", 12.0, 300, vehicle_ids=frozenset({"a", "c"}))
    allocation = domain.allocate(signal, [ev("a"), ev("b"), ev("c")], domain.Policy())
    assert set(allocation.setpoints_kw) == {"a", "c"}
    assert allocation.allocated_kw == pytest.approx(12.0)
    assert allocation.excluded == {"b": "not among the signal's vehicles"}


def test_fallback_keeps_to_the_selection():
    signal = domain.SignalSpec("FCR", 20.0, 300, vehicle_ids=frozenset({"a", "b"}))
    allocation = domain.fallback_allocate(
        10.0,
        signal,
        {"a": 10.0},
        [ev("a"), ev("b"), ev("c")],
        domain.Policy(),
        rng=random.Random(1),
    )
    assert "c" not in allocation.setpoints_kw
    assert allocation.excluded["c"] == "not among the signal's vehicles"


@pytest.fixture
def fleets(db):
    now = timezone.now()
    out = {}
    for fleet_id in ("sel-a", "sel-b"):
        fleet = Fleet.objects.create(id=fleet_id, name=fleet_id)
        for n in range(3):
            vehicle = Vehicle.objects.create(
                id=f"{fleet_id}-{n}", fleet=fleet, battery_kwh=60, max_charge_kw=10, max_discharge_kw=10
            )
            VehicleState.objects.create(
                vehicle=vehicle, soc=0.8, plugged_in=True, reported_at=now, received_at=now
            )
        out[fleet_id] = fleet
    return out


def test_submit_stores_the_selection_and_the_allocator_sees_only_it(fleets):
    signal, _dispatch = services.signal_submit(
        signal_type="FCR", power_kw=10, duration_s=300, fleet_id="sel-a", vehicle_ids=["sel-a-2", "sel-a-0"]
    )
    assert signal.vehicle_ids == ["sel-a-0", "sel-a-2"]
    states = services.vehicle_states(signal, timezone.now(), with_history=False)
    assert sorted(s.vehicle_id for s in states) == ["sel-a-0", "sel-a-2"]


@pytest.mark.parametrize(
    ("fleet_id", "vehicle_ids", "message"),
    [
        ("sel-a", ["sel-b-0"], "no vehicle sel-b-0 in fleet 'sel-a'"),
        (None, ["nope"], "no vehicle nope"),
        (None, [], "at least one vehicle"),
        (None, "sel-a-0", "a list of vehicle ids"),
    ],
)
def test_a_selection_outside_the_registry_or_the_fleet_is_refused(fleets, fleet_id, vehicle_ids, message):
    with pytest.raises(services.SignalRejected) as refused:
        services.signal_submit(
            signal_type="FCR", power_kw=10, duration_s=300, fleet_id=fleet_id, vehicle_ids=vehicle_ids
        )
    assert refused.value.field == "vehicle_ids"
    assert message in refused.value.message


def finished_round(fleets, *, acked_kw: float, status=DispatchStatus.PARTIAL, round_=0) -> Dispatch:
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=20, start_at=now, duration_s=600, valid_until=now + timedelta(minutes=10),
        fleet=fleets["sel-a"],
    )  # fmt: skip
    dispatch = Dispatch.objects.create(
        signal=signal, round=round_, target_kw=20, allocated_kw=20, acknowledged_kw=acked_kw, status=status,
        finished_at=now,
    )  # fmt: skip
    Command.objects.create(
        dispatch=dispatch, vehicle_id="sel-a-0", power_kw=acked_kw, allocated_kw=acked_kw,
        status=CommandStatus.ACKED, valid_until=signal.valid_until,
    )  # fmt: skip
    return dispatch


def test_rerun_opens_the_next_round_for_what_is_missing(fleets, django_capture_on_commit_callbacks):
    dispatch = finished_round(fleets, acked_kw=8)
    with django_capture_on_commit_callbacks() as callbacks:
        fallback = services.dispatch_fallback_rerun(dispatch.id)
    assert (fallback.round, fallback.target_kw, fallback.status) == (1, 12.0, DispatchStatus.PENDING)
    assert len(callbacks) == 1  # the allocation is enqueued after commit


def test_rerun_is_refused_while_a_round_runs_when_nothing_is_missing_or_fallback_is_noop(fleets, settings):
    running = finished_round(fleets, acked_kw=8)
    Dispatch.objects.create(signal=running.signal, round=1, target_kw=12, status=DispatchStatus.COLLECTING)
    with pytest.raises(services.DispatchStateError, match="still under way"):
        services.dispatch_fallback_rerun(running.id)

    complete = finished_round(fleets, acked_kw=20, status=DispatchStatus.COMPLETED)
    with pytest.raises(services.DispatchStateError, match="everything is acknowledged"):
        services.dispatch_fallback_rerun(complete.id)

    settings.V2G = replace(settings.V2G, dispatch=replace(settings.V2G.dispatch, fallback="noop"))
    with pytest.raises(services.DispatchStateError, match="noop"):
        services.dispatch_fallback_rerun(finished_round(fleets, acked_kw=1).id)
