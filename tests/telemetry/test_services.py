"""Recording pushed vehicle states (the bridge's state route), on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from telemetry.services import states_record
from v2g_project.bridge import Message

pytestmark = pytest.mark.django_db
TOPIC = "v2g/vehicle/state/+"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def vehicles():
    fleet = Fleet.objects.create(id="f", name="F")
    for vid in ("ev-1", "ev-2"):
        Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=7, max_discharge_kw=7)


def message(vehicle_id: str, soc: float, at: datetime, **extra) -> Message:
    payload = {
        "vehicle_id": vehicle_id,
        "soc": soc,
        "plugged_in": True,
        "power_kw": 0.0,
        "timestamp": at.isoformat(),
    }
    return Message(f"v2g/vehicle/state/{vehicle_id}", {**payload, **extra}, T0 + timedelta(seconds=1))


def test_latest_state_wins_and_redelivery_changes_nothing(caplog):
    batch = [
        message("ev-1", 0.5, T0),
        message("ev-1", 0.6, T0 + timedelta(seconds=10)),
        message("ev-2", 0.9, T0),
    ]
    assert states_record(batch, TOPIC) == 2
    assert VehicleState.objects.get(vehicle_id="ev-1").soc == 0.6
    # An older state arriving late (or a QoS 1 redelivery) never overwrites a newer one.
    states_record([message("ev-1", 0.1, T0)], TOPIC)
    assert VehicleState.objects.get(vehicle_id="ev-1").soc == 0.6
    states_record(batch, TOPIC)
    assert VehicleState.objects.count() == 2


def test_unknown_vehicles_and_bad_payloads_are_logged_and_the_rest_recorded(caplog):
    batch = [
        message("ghost", 0.5, T0),
        message("ev-1", 1.5, T0),
        Message("v2g/vehicle/state/ev-2", {"vehicle_id": "ev-1", "soc": 0.3, "plugged_in": False,
                                            "timestamp": T0.isoformat()}, T0),
        message("ev-2", 0.4, T0, plugged_in=False),
    ]  # fmt: skip
    assert states_record(batch, TOPIC) == 1
    state = VehicleState.objects.get()
    assert (state.vehicle_id, state.soc, state.plugged_in) == ("ev-2", 0.4, False)
    text = caplog.text
    assert "unknown vehicle 'ghost'" in text
    assert "outside 0-1" in text
    assert "does not match the topic" in text
