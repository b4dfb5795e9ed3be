"""Telemetry services on the real database: pushed states, history, Last Will,
discovery, retention and pull rounds (publishing stubbed; the integration
test in test_pull.py uses the real broker and worker)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from fleet.models import Fleet, Vehicle
from telemetry import services
from telemetry.models import TelemetryPoll, VehicleState, VehicleStateHistory
from telemetry.services import (
    discovery_record,
    history_purge,
    poll_finish,
    poll_start,
    pull_answers_record,
    states_record,
    vehicles_offline_record,
)
from tests.conftest import replace
from v2g_project.bridge import Message

pytestmark = pytest.mark.django_db
TOPIC = "v2g/vehicle/state/+"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def vehicles():
    fleet = Fleet.objects.create(id="f", name="F")
    for vid in ("ev-1", "ev-2"):
        Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=7, max_discharge_kw=7)


def counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


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


# --- history ------------------------------------------------------------------------


def test_every_state_goes_to_history_once_and_latest_stays_newest():
    batch = [
        message("ev-1", 0.5, T0),
        message("ev-1", 0.6, T0 + timedelta(seconds=10)),
        message("ev-1", 0.6, T0 + timedelta(seconds=10)),  # a QoS 1 redelivery inside the batch
        message("ev-2", 0.9, T0),
        message("ghost", 0.9, T0),
    ]
    with CaptureQueriesContext(connection) as queries:
        states_record(batch, TOPIC)
    # One history insert and one upsert for the whole batch, not one per message.
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 2
    history = VehicleStateHistory.objects.order_by("vehicle_id", "reported_at")
    assert [(h.vehicle_id, h.soc, h.source) for h in history] == [
        ("ev-1", 0.5, "push"), ("ev-1", 0.6, "push"), ("ev-2", 0.9, "push"),
    ]  # fmt: skip
    states_record(batch, TOPIC)  # redelivered as a whole
    assert VehicleStateHistory.objects.count() == 3
    # A late, older state enters the history but not the latest state.
    states_record([message("ev-1", 0.2, T0 - timedelta(minutes=5))], TOPIC)
    assert VehicleStateHistory.objects.filter(vehicle_id="ev-1").count() == 3
    assert VehicleState.objects.get(vehicle_id="ev-1").soc == 0.6


# --- Last Will ---------------------------------------------------------------------------

LWT = "v2g/vehicle/lwt/+"


def test_last_will_marks_the_vehicle_offline_until_its_next_state():
    states_record([message("ev-1", 0.5, T0), message("ev-2", 0.5, T0)], TOPIC)
    will_at = T0 + timedelta(seconds=5)
    assert vehicles_offline_record([Message("v2g/vehicle/lwt/ev-1", {}, will_at)], LWT) == 1
    state = VehicleState.objects.get(vehicle_id="ev-1")
    assert not state.online
    assert not state.is_available(will_at, stale_after_s=300)
    assert VehicleState.objects.get(vehicle_id="ev-2").online
    # A gateway's will names its vehicle in the payload.
    vehicles_offline_record([Message("v2g/vehicle/lwt/gw-7", {"vehicle_id": "ev-2"}, will_at)], LWT)
    assert not VehicleState.objects.get(vehicle_id="ev-2").online
    # Back online with the next state.
    states_record([message("ev-1", 0.5, T0 + timedelta(seconds=30))], TOPIC)
    assert VehicleState.objects.get(vehicle_id="ev-1").online


def test_last_will_older_than_the_latest_state_leaves_the_vehicle_online():
    states_record([message("ev-1", 0.5, T0)], TOPIC)  # received at T0 + 1 s
    assert vehicles_offline_record([Message("v2g/vehicle/lwt/ev-1", {}, T0)], LWT) == 0
    assert VehicleState.objects.get(vehicle_id="ev-1").online


def will(topic_id: str, received_at: datetime, *, retain: bool = False, **payload) -> Message:
    return Message(f"v2g/vehicle/lwt/{topic_id}", payload, received_at, retain=retain)


def test_a_retained_will_replayed_at_a_bridge_restart_spares_vehicles_that_came_back():
    """The broker replays a retained will at every (re)subscription, hours later
    maybe: the vehicle that came back since must stay online."""
    connected_at = T0  # the gateway's connection, when its will was set
    will_payload = {
        "vehicle_ids": ["ev-1", "ev-2"],
        "status": "offline",
        "timestamp": connected_at.isoformat(),
    }
    states_record([message("ev-1", 0.5, T0 + timedelta(minutes=1)), message("ev-2", 0.5, T0)], TOPIC)
    # The connection drops: the live will marks both offline.
    assert vehicles_offline_record([will("gw-1", T0 + timedelta(minutes=2), **will_payload)], LWT) == 2
    # ev-1 comes back (a new connection, no birth message) and reports.
    states_record([message("ev-1", 0.6, T0 + timedelta(minutes=5))], TOPIC)
    assert VehicleState.objects.get(vehicle_id="ev-1").online
    # The bridge restarts an hour later and gets the retained copy of the old will.
    replayed = will("gw-1", T0 + timedelta(hours=1), retain=True, **will_payload)
    assert vehicles_offline_record([replayed], LWT) == 0
    assert VehicleState.objects.get(vehicle_id="ev-1").online
    assert not VehicleState.objects.get(vehicle_id="ev-2").online  # still gone, as it was
    assert vehicles_offline_record([replayed], LWT) == 0  # at every restart


def test_a_retained_will_marks_offline_only_vehicles_silent_since_its_timestamp():
    """A will that fired while no bridge listened still counts, for the vehicles
    that reported nothing since the connection it belongs to began."""
    states_record([message("ev-1", 0.5, T0 - timedelta(minutes=10)), message("ev-2", 0.5, T0)], TOPIC)
    retained = will(
        "gw-1", T0 + timedelta(hours=1), retain=True, vehicle_ids=["ev-1", "ev-2"],
        timestamp=(T0 - timedelta(minutes=5)).isoformat(),
    )  # fmt: skip
    assert vehicles_offline_record([retained], LWT) == 1
    assert not VehicleState.objects.get(vehicle_id="ev-1").online
    assert VehicleState.objects.get(vehicle_id="ev-2").online


def test_a_retained_will_without_a_timestamp_is_ignored(caplog):
    states_record([message("ev-1", 0.5, T0)], TOPIC)
    undated = will("ev-1", T0 + timedelta(hours=1), retain=True, status="offline")
    garbled = will("ev-1", T0 + timedelta(hours=1), retain=True, timestamp="yesterday")
    assert vehicles_offline_record([undated, garbled], LWT) == 0
    assert VehicleState.objects.get(vehicle_id="ev-1").online
    assert "no readable timestamp: ignored" in caplog.text
    # The same will live (no retain flag) is dated by its arrival and counts.
    assert vehicles_offline_record([will("ev-1", T0 + timedelta(hours=1), status="offline")], LWT) == 1


@pytest.mark.parametrize("retain", [False, True])
def test_a_birth_message_on_the_will_topic_is_not_a_will(retain):
    states_record([message("ev-1", 0.5, T0), message("ev-2", 0.5, T0)], TOPIC)
    later = T0 + timedelta(hours=1)
    births = [
        will("ev-1", later, retain=retain, online=True, timestamp=later.isoformat()),
        will("gw-1", later, retain=retain, status="online", vehicle_ids=["ev-1", "ev-2"]),
    ]
    assert vehicles_offline_record(births, LWT) == 0
    assert VehicleState.objects.filter(online=True).count() == 2


def test_a_will_naming_no_vehicle_is_logged_and_the_rest_applied(caplog):
    states_record([message("ev-1", 0.5, T0)], TOPIC)
    batch = [
        Message("elsewhere/ev-1", {}, T0 + timedelta(seconds=5)),  # no vehicle in topic nor payload
        will("gw-1", T0 + timedelta(seconds=5), vehicle_ids=[7, "", "ev-1"]),
    ]
    assert vehicles_offline_record(batch, LWT) == 1
    assert "Last Will on elsewhere/ev-1 ignored: names no vehicle" in caplog.text


# --- discovery -------------------------------------------------------------------------------

DISCOVERY = "v2g/fleet/response/+"


def announce(vehicle_id: str, **extra) -> Message:
    payload = {
        "vehicle_id": vehicle_id, "soc": 0.7, "plugged_in": True, "power_kw": 0.0,
        "timestamp": T0.isoformat(), "battery_kwh": 64.0, "max_charge_kw": 11.0,
        "max_discharge_kw": 9.0, "is_v2g": True, "min_soc": 0.25, **extra,
    }  # fmt: skip
    return Message(f"v2g/fleet/response/{vehicle_id}", payload, T0 + timedelta(seconds=1))


def test_discovery_registers_unknown_vehicles_when_auto_register_is_on():
    batch = [announce("ev-1"), announce("new-1"), announce("bad-1", battery_kwh=-1)]
    assert discovery_record(batch, DISCOVERY, auto_register=True, fleet_id="discovered") == 2
    vehicle = Vehicle.objects.get(id="new-1")
    assert (vehicle.fleet_id, vehicle.battery_kwh, vehicle.max_discharge_kw, vehicle.min_soc) == (
        "discovered", 64.0, 9.0, 0.25,
    )  # fmt: skip
    assert Fleet.objects.filter(id="discovered").exists()
    assert not Vehicle.objects.filter(id="bad-1").exists()
    assert VehicleState.objects.get(vehicle_id="new-1").soc == 0.7
    assert VehicleStateHistory.objects.get(vehicle_id="ev-1").source == "discovery"
    # Known vehicles keep their registration (only their state is refreshed).
    assert Vehicle.objects.get(id="ev-1").battery_kwh == 50
    assert discovery_record(batch, DISCOVERY, auto_register=True, fleet_id="discovered") == 2  # idempotent
    assert Vehicle.objects.filter(fleet_id="discovered").count() == 1


def test_discovery_without_auto_register_counts_unknown_vehicles(caplog):
    before = counter("telemetry_states_total", outcome="unknown_vehicle")
    assert discovery_record([announce("ev-1"), announce("new-1")], DISCOVERY, auto_register=False,
                            fleet_id="discovered") == 1  # fmt: skip
    assert not Vehicle.objects.filter(id="new-1").exists()
    assert counter("telemetry_states_total", outcome="unknown_vehicle") == before + 1
    assert "unknown vehicle 'new-1'" in caplog.text


# --- retention -------------------------------------------------------------------------------------


def test_purge_deletes_old_history_in_chunks_and_is_idempotent():
    now = T0 + timedelta(days=40)
    batch = [
        Message("v2g/vehicle/state/ev-1", message("ev-1", 0.5, T0 + timedelta(minutes=n)).payload,
                T0 + timedelta(days=day, minutes=n))
        for day, n in [(0, 1), (0, 2), (0, 3), (5, 4), (35, 5)]
    ]  # fmt: skip
    states_record(batch, TOPIC)
    assert history_purge(retention_days=30, now=now, chunk_size=2) == 4
    assert list(VehicleStateHistory.objects.values_list("reported_at", flat=True)) == [
        T0 + timedelta(minutes=5)
    ]
    assert history_purge(retention_days=30, now=now, chunk_size=2) == 0
    assert VehicleState.objects.filter(vehicle_id="ev-1").exists()  # the latest state is never purged


# --- pull rounds (no broker: publishing is stubbed) ----------------------------------------------------


@pytest.fixture
def published(monkeypatch):
    sent = []
    monkeypatch.setattr(services.mqtt, "publisher", lambda: None)
    monkeypatch.setattr(
        services.mqtt, "publish_wait", lambda _c, topic, payload, *_: sent.append((topic, payload))
    )
    return sent


@pytest.fixture
def t1():
    """Now (vehicles were registered before it), one second into a 60 s Beat slot."""
    return services.poll_slot(timezone.now() + timedelta(seconds=60), 60) + timedelta(seconds=1)


@pytest.fixture
def pull_mode(settings):
    settings.V2G = replace(settings.V2G, telemetry=replace(settings.V2G.telemetry, mode="pull"))


def answer(poll_id, vehicle_id: str, at: datetime) -> Message:
    return Message(
        f"v2g/telemetry/response/{vehicle_id}",
        {**message(vehicle_id, 0.4, at).payload, "request_id": str(poll_id)},
        at,
    )


def test_pull_round_records_answers_and_misses(published, pull_mode, t1, django_capture_on_commit_callbacks):
    before = counter("telemetry_poll_timeout_total")
    started = poll_start(now=t1)
    assert started.outcome == "started"
    topic, payload = published[0]
    assert topic == "v2g/telemetry/request"
    assert json.loads(payload)["request_id"] == str(started.poll_id)
    pull_answers_record(
        [answer(started.poll_id, "ev-1", t1 + timedelta(seconds=1))], "v2g/telemetry/response/+"
    )
    assert poll_finish(started.poll_id, now=t1 + timedelta(seconds=2)) > 0  # before the deadline: wait
    with django_capture_on_commit_callbacks(execute=True):
        assert poll_finish(started.poll_id, now=t1 + timedelta(seconds=60)) is None
    poll = TelemetryPoll.objects.get(id=started.poll_id)
    assert (poll.status, poll.expected, poll.answered, poll.timed_out) == ("finished", 2, 1, 1)
    assert list(poll.misses.values_list("vehicle_id", flat=True)) == ["ev-2"]
    assert VehicleStateHistory.objects.get(vehicle_id="ev-1").source == "pull"
    with django_capture_on_commit_callbacks(execute=True):
        poll_finish(started.poll_id, now=t1 + timedelta(seconds=61))  # a second finish counts nothing
    assert counter("telemetry_poll_timeout_total") == before + 1


def test_pull_round_is_skipped_in_push_mode_unless_forced(published, t1):
    assert poll_start(now=t1).outcome == "skipped"
    assert poll_start(force=True, now=t1).outcome == "started"


def test_overlapping_rounds_are_refused(published, pull_mode, t1):
    assert poll_start(now=t1).outcome == "started"
    # A second Beat (or a forced round) while the first collects.
    assert poll_start(now=t1 + timedelta(seconds=1)).outcome == "refused"
    assert poll_start(force=True, now=t1 + timedelta(seconds=2)).outcome == "refused"
    # The same slot, even once the first round is over (two Beats, one late).
    assert poll_start(now=t1 + timedelta(seconds=30)).outcome == "refused"
    assert TelemetryPoll.objects.count() == 1
    # The next slot runs, and finishes the previous round if its finishing task was lost.
    assert poll_start(now=t1 + timedelta(seconds=60)).outcome == "started"
    assert TelemetryPoll.objects.filter(status="finished").count() == 1


def test_answers_without_a_known_request_are_still_recorded(published):
    stray = answer(uuid.uuid4(), "ev-1", T0)
    bare = Message("v2g/telemetry/response/ev-2", message("ev-2", 0.3, T0).payload, T0)
    assert pull_answers_record([stray, bare], "v2g/telemetry/response/+") == 2
    assert set(VehicleStateHistory.objects.values_list("poll", flat=True)) == {None}
