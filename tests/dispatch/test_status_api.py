"""GET /api/vehicles/status (SPEC §11)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from fleet.models import Fleet, Site, Vehicle
from telemetry import services as telemetry_services
from telemetry.models import PlugProfile, VehicleState, VehicleStateHistory

pytestmark = pytest.mark.django_db
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def fleet():
    fleet = Fleet.objects.create(id="f1", name="F1")
    Site.objects.create(fleet=fleet, name="Depot")
    return fleet


def vehicle(fleet, vid, **state):
    v = Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=10, max_discharge_kw=10,
                               cluster="north" if vid.endswith("1") else "south")  # fmt: skip
    if state:
        now = timezone.now()
        VehicleState.objects.create(
            vehicle=v, soc=state.get("soc", 0.6), plugged_in=state.get("plugged_in", True),
            online=state.get("online", True), reported_at=now, received_at=state.get("received_at", now),
        )  # fmt: skip
    return v


def commuter_history(v, now: datetime, days: int = 14) -> None:
    """Plugged in 18:00-07:30 local every day, one report every 15 minutes."""
    rows, t = [], now - timedelta(days=days)
    while t < now:
        local = t.astimezone(PARIS)
        plugged = local.hour >= 18 or (local.hour, local.minute) < (7, 30)
        rows.append(VehicleStateHistory(vehicle=v, soc=0.6, plugged_in=plugged, power_kw=0.0, reported_at=t,
                                        received_at=t))  # fmt: skip
        t += timedelta(minutes=15)
    VehicleStateHistory.objects.bulk_create(rows)


def test_status_of_each_vehicle(api, fleet):
    v1 = vehicle(fleet, "ev-1", soc=0.6, plugged_in=True)
    vehicle(fleet, "ev-2", soc=0.4, plugged_in=False)
    vehicle(fleet, "ev-3", online=False)
    vehicle(fleet, "ev-4")  # never heard from
    vehicle(fleet, "ev-5", received_at=timezone.now() - timedelta(hours=3))
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="aFRR", power_kw=8, start_at=now, duration_s=900, valid_until=now + timedelta(minutes=15)
    )
    dispatch = Dispatch.objects.create(signal=signal, target_kw=8, status=DispatchStatus.COMPLETED)
    Command.objects.create(dispatch=dispatch, vehicle=v1, power_kw=5, allocated_kw=5, status=CommandStatus.ACKED,
                           valid_until=signal.valid_until)  # fmt: skip
    Command.objects.create(dispatch=dispatch, vehicle_id="ev-2", power_kw=3, allocated_kw=3,
                           status=CommandStatus.TIMED_OUT, valid_until=signal.valid_until)  # fmt: skip

    body = api.get("/api/vehicles/status?fleet_id=f1").json()
    rows = {row["vehicle_id"]: row for row in body["results"]}
    assert {k: r["current_status"] for k, r in rows.items()} == {
        "ev-1": "dispatched", "ev-2": "unplugged", "ev-3": "offline", "ev-4": "unknown", "ev-5": "stale",
    }  # fmt: skip
    first = rows["ev-1"]
    assert set(first) == {
        "vehicle_id", "current_status", "forecasted_plugin_window", "forecasted_soc", "next_dispatch_window",
        "last_dispatch_decision",
    }  # fmt: skip
    assert list(first["forecasted_soc"]) == ["t+0m", "t+15m", "t+30m", "t+60m", "t+120m", "t+240m"]
    assert first["forecasted_soc"]["t+0m"] == 0.6
    assert first["forecasted_soc"]["t+15m"] < 0.6  # discharging 5 kW for the setpoint's 15 minutes
    assert first["forecasted_plugin_window"]["start"] is not None
    assert first["next_dispatch_window"]["end"] == signal.valid_until.isoformat().replace("+00:00", "Z")
    assert first["last_dispatch_decision"] == {
        "signal_type": "aFRR", "target_power": 8.0, "vehicles_selected": 2,
        "timestamp": dispatch.created_at.isoformat().replace("+00:00", "Z"),
    }  # fmt: skip
    # A timed-out command is a past decision, not a window ahead.
    assert rows["ev-2"]["next_dispatch_window"] is None
    assert rows["ev-2"]["last_dispatch_decision"]["signal_type"] == "aFRR"
    assert rows["ev-4"]["forecasted_soc"] == {} and rows["ev-4"]["last_dispatch_decision"] is None


def test_the_plug_in_window_is_learned_from_history(api, fleet):
    v = vehicle(fleet, "ev-1", soc=0.5, plugged_in=False)
    now = timezone.now()
    commuter_history(v, now)
    # Until the profiles are learned, the deterministic fallback: unplugged, no window known.
    assert (
        api.get("/api/vehicles/status?fleet_id=f1").json()["results"][0]["forecasted_plugin_window"] is None
    )
    assert telemetry_services.profiles_learn(now=now) == {"vehicles": 1, "learned": 1}
    window = api.get("/api/vehicles/status?fleet_id=f1").json()["results"][0]["forecasted_plugin_window"]
    start = datetime.fromisoformat(window["start"]).astimezone(PARIS)
    end = datetime.fromisoformat(window["end"]).astimezone(PARIS)
    # Unplugged now: the learned window is the next evening-to-morning span.
    assert (start.hour, start.minute) == (18, 0) or start <= now.astimezone(PARIS) + timedelta(minutes=15)
    assert (end.hour, end.minute) == (7, 30)


@pytest.mark.parametrize(
    ("query", "expected"),
    [("fleet_id=f1&cluster=north", ["ev-1"]), ("fleet_id=f1&site=Nowhere", []), ("cluster=south", ["ev-2"])],
)
def test_filters(api, fleet, query, expected):
    vehicle(fleet, "ev-1", soc=0.5)
    vehicle(fleet, "ev-2", soc=0.5)
    assert [r["vehicle_id"] for r in api.get(f"/api/vehicles/status?{query}").json()["results"]] == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [("fleet_id=not%20a%20slug", "fleet_id"), ("fleet_id=", "fleet_id"), ("cluster=" + "x" * 65, "cluster")],
)
def test_malformed_filters_are_a_400_naming_them(api, fleet, query, field):
    response = api.get(f"/api/vehicles/status?{query}")
    assert response.status_code == 400 and field in response.json()


def test_unknown_filter_values_give_an_empty_list_and_login_is_required(api, client, fleet):
    vehicle(fleet, "ev-1", soc=0.5)
    assert api.get("/api/vehicles/status?fleet_id=nope").json()["results"] == []
    client.logout()
    assert client.get("/api/vehicles/status").status_code == 401


def test_dispatch_scoring_sees_departures_as_availability(fleet):
    from dispatch.services import vehicle_states

    now = timezone.now()
    staying = vehicle(fleet, "ev-1", soc=0.8)
    leaving = vehicle(fleet, "ev-2", soc=0.8)
    Vehicle.objects.filter(id=leaving.id).update(departure_at=now + timedelta(minutes=15))
    signal = FlexibilitySignal.objects.create(
        signal_type="NEBEF", power_kw=10, start_at=now, duration_s=3600, valid_until=now + timedelta(hours=1)
    )
    states = {s.vehicle_id: s for s in vehicle_states(signal, now)}
    assert states[staying.id].availability == 1.0
    assert states[leaving.id].availability == pytest.approx(0.25, abs=0.01)  # leaves after 15 of 60 minutes


def test_dispatch_scoring_uses_the_learned_plug_in_pattern(fleet):
    """Two vehicles plugged in now; one's history says it always leaves at the
    next quarter-hour: the forecast shortens its share of a one-hour signal."""
    from dispatch.services import vehicle_states

    now = timezone.now().replace(second=0, microsecond=0)
    staying, leaving = vehicle(fleet, "ev-1", soc=0.8), vehicle(fleet, "ev-2", soc=0.8)
    leave_at = (now + timedelta(minutes=15)).astimezone(PARIS)
    rows = []
    for v, plugged in ((staying, lambda t: True), (leaving, lambda t: not _same_slot_or_later(t, leave_at))):
        t = now - timedelta(days=7)
        while t < now:
            rows.append(VehicleStateHistory(vehicle=v, soc=0.8, plugged_in=plugged(t), power_kw=0.0,
                                            reported_at=t, received_at=t))  # fmt: skip
            t += timedelta(minutes=15)
    VehicleStateHistory.objects.bulk_create(rows)
    telemetry_services.profiles_learn(now=now)
    assert PlugProfile.objects.count() == 2
    signal = FlexibilitySignal.objects.create(
        signal_type="NEBEF", power_kw=10, start_at=now, duration_s=3600, valid_until=now + timedelta(hours=1)
    )
    states = {s.vehicle_id: s for s in vehicle_states(signal, now)}
    assert states[staying.id].availability == 1.0
    assert 0.0 < states[leaving.id].availability <= 0.5


def _same_slot_or_later(t: datetime, leave_at: datetime) -> bool:
    """Local time of day at or after ``leave_at``'s quarter-hour, for two hours (then back)."""
    local = t.astimezone(PARIS)
    minutes = local.hour * 60 + local.minute
    start = leave_at.hour * 60 + leave_at.minute // 15 * 15
    return 0 <= (minutes - start) % 1440 < 120
