"""A discharge never leaves a vehicle unable to reach its target SoC by its departure
(DOMAIN.md: drivers' departure targets are never given up), using the departure the
vehicle reports with its state, else the registry's planned one."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from dispatch import domain, services
from dispatch.models import FlexibilitySignal
from fleet.models import Fleet, Vehicle
from telemetry.codec import state_decode
from telemetry.models import VehicleState
from telemetry.services import states_record
from v2g_project.bridge import Message
from v2g_project.payloads import PayloadError

ETA = math.sqrt(0.87)


def test_departure_floor_is_what_full_power_charging_still_recovers():
    # 10 kW into 50 kWh at sqrt(0.87) efficiency: about 18.7 % of SoC an hour.
    floor = domain.departure_floor(target_soc=0.8, max_charge_kw=10, battery_kwh=50, hours_to_departure=2)
    assert floor == pytest.approx(0.8 - 2 * 10 * ETA / 50)
    assert (
        domain.departure_floor(target_soc=0.8, max_charge_kw=10, battery_kwh=50, hours_to_departure=0) == 0.8
    )
    assert domain.departure_floor(target_soc=0.8, max_charge_kw=10, battery_kwh=50, hours_to_departure=9) == 0
    assert (
        domain.departure_floor(target_soc=0.8, max_charge_kw=10, battery_kwh=50, hours_to_departure=None) == 0
    )


def test_a_vehicle_at_its_departure_floor_is_excluded_and_another_is_limited_by_it():
    policy = domain.Policy()
    signal = domain.SignalSpec("FCR", 20.0, 3600)
    leaving = domain.VehicleState(
        "leaving", soc=0.6, max_discharge_kw=10, battery_kwh=50, departure_floor=0.65
    )
    tight = domain.VehicleState("tight", soc=0.6, max_discharge_kw=10, battery_kwh=50, departure_floor=0.5)
    free = domain.VehicleState("free", soc=0.6, max_discharge_kw=10, battery_kwh=50)

    allocation = domain.allocate(signal, [leaving, tight, free], policy)

    assert "leaving" not in allocation.setpoints_kw
    assert allocation.excluded["leaving"] == "SoC 0.60 at or below floor 0.65"
    # (0.6 - 0.5) x 50 kWh over one hour: 5 kW at most.
    assert domain.vehicle_limit_kw(tight, signal, policy) == pytest.approx(5.0)
    assert allocation.setpoints_kw["tight"] <= 5.0 + 1e-9
    # Charging is never limited by a departure.
    charge = domain.SignalSpec("FCR", -5.0, 3600)
    assert domain.vehicle_limit_kw(leaving, charge, policy) > 0


def test_state_payloads_carry_an_optional_departure():
    base = {"vehicle_id": "ev", "soc": 0.5, "plugged_in": True, "timestamp": "2026-11-23T18:00:00+00:00"}
    assert state_decode(base, "ev").departure_at is None
    state = state_decode({**base, "departure_at": "2026-11-24T07:30:00+01:00"}, "ev")
    assert state.departure_at.isoformat() == "2026-11-24T07:30:00+01:00"
    with pytest.raises(PayloadError, match="departure_at"):
        state_decode({**base, "departure_at": "tomorrow"}, "ev")


@pytest.mark.django_db
def test_dispatch_uses_the_reported_departure_else_the_registry(settings):
    now = timezone.now()
    fleet = Fleet.objects.create(id="dep", name="Departures")
    registry_departure = now + timedelta(hours=12)  # far: no constraint from the registry alone
    for vid in ("reports-soon", "registry-soon", "no-departure"):
        Vehicle.objects.create(
            id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=10, max_discharge_kw=10, target_soc=0.8,
            departure_at=now + timedelta(minutes=30) if vid == "registry-soon" else registry_departure,
        )  # fmt: skip
    soon = (now + timedelta(minutes=30)).isoformat()
    payloads = {
        vid: {"vehicle_id": vid, "soc": 0.6, "plugged_in": True, "timestamp": now.isoformat()}
        for vid in ("reports-soon", "registry-soon", "no-departure")
    }
    payloads["reports-soon"]["departure_at"] = soon
    states_record(
        [Message(f"v2g/vehicle/state/{vid}", payload, now) for vid, payload in payloads.items()],
        "v2g/vehicle/state/+",
    )
    assert VehicleState.objects.get(vehicle_id="reports-soon").departure_at is not None
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=10, start_at=now, duration_s=600, valid_until=now + timedelta(seconds=600),
        fleet=fleet,
    )  # fmt: skip

    states = {s.vehicle_id: s for s in services.vehicle_states(signal, now, with_history=False)}

    # 20 min left after the signal: 0.8 - 10 x 0.93 / 50 / 3 ≈ 0.74 > 0.6.
    assert states["reports-soon"].departure_floor == pytest.approx(0.8 - 10 * ETA / 50 / 3, abs=1e-3)
    assert states["registry-soon"].departure_floor == pytest.approx(0.8 - 10 * ETA / 50 / 3, abs=1e-3)
    assert states["no-departure"].departure_floor == 0.0  # 12 h away: recoverable
    allocation = domain.allocate(
        domain.SignalSpec("FCR", 10, 600),
        list(states.values()),
        services.policy_from_config(settings.V2G.dispatch),
    )
    assert set(allocation.setpoints_kw) == {"no-departure"}
