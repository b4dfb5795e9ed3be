"""The dispatch pipeline end to end: a real Celery worker, the real MQTT bridge,
the real broker and database; the vehicles answer from the test."""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from dispatch import services
from dispatch.models import (
    Command,
    CommandStatus,
    Dispatch,
    DispatchLogEntry,
    DispatchStatus,
    FlexibilitySignal,
)
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from tests.conftest import metric_value, start_worker, stop_process, wait_for, worker_ready
from v2g_project import mqtt

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


class FakeFleet:
    """Vehicles behind one MQTT client: each answers its commands as told.

    behaviour per vehicle: "accept" (default), "reject", "silent" (never
    answers), "twice" (acks twice, as a QoS 1 redelivery would).
    """

    def __init__(self, cfg, behaviour: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.behaviour = behaviour or {}
        self.commands: list[dict] = []
        self._cond = threading.Condition()
        self.client = mqtt.client_create(cfg, "test-fleet", will=False)
        self.client.on_message = self._on_command
        mqtt.connect(self.client, cfg)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(cfg.command_topic.replace("{vehicle_id}", "+"), qos=1)
        assert subscribed.wait(5)

    def _on_command(self, client, _userdata, message) -> None:
        command = json.loads(message.payload)
        with self._cond:
            self.commands.append(command)
            self._cond.notify_all()
        mode = self.behaviour.get(command["vehicle_id"], "accept")
        if mode == "silent":
            return
        ack = {
            "command_id": command["command_id"],
            "vehicle_id": command["vehicle_id"],
            "status": "rejected" if mode == "reject" else "accepted",
            "timestamp": datetime.now(UTC).isoformat(),
        }
        if mode == "reject":
            ack["reason"] = "driver override"
        topic = f"vehicle/{command['vehicle_id']}/ack"
        for _ in range(2 if mode == "twice" else 1):
            client.publish(topic, json.dumps(ack), qos=1)

    def send(self, topic: str, payload: bytes | str) -> None:
        mqtt.publish_wait(self.client, topic, payload, qos=1, timeout_s=5)

    def received_for(self, dispatch_id) -> list[dict]:
        with self._cond:
            return [c for c in self.commands if c["dispatch_id"] == str(dispatch_id)]

    def close(self) -> None:
        mqtt.disconnect(self.client)


@pytest.fixture(autouse=True)
def _settle_before_teardown():
    """Let the worker finish the rounds a test started before the database is
    flushed: a flush (TRUNCATE) racing the worker's transactions can deadlock."""
    yield
    open_rounds = Dispatch.objects.filter(status__in=(DispatchStatus.PENDING, DispatchStatus.COLLECTING))
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not open_rounds.exists(), 6, "open dispatch rounds to finish")


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(3)}"


@pytest.fixture
def make_fleet(prefix):
    """make_fleet(n, **overrides) -> vehicle ids, each plugged in with a fresh state."""
    fleet = Fleet.objects.create(id=f"{prefix}-fleet", name="Test fleet")

    def _make(count: int, soc: float = 0.8, **fields) -> list[str]:
        ids = []
        for _ in range(count):
            vehicle = Vehicle.objects.create(
                id=f"{prefix}-ev-{len(Vehicle.objects.filter(fleet=fleet)):03d}",
                fleet=fleet,
                battery_kwh=fields.get("battery_kwh", 60.0),
                max_charge_kw=fields.get("max_charge_kw", 11.0),
                max_discharge_kw=fields.get("max_discharge_kw", 10.0),
                is_v2g=fields.get("is_v2g", True),
            )
            now = timezone.now()
            VehicleState.objects.create(
                vehicle=vehicle,
                soc=soc,
                plugged_in=fields.get("plugged_in", True),
                reported_at=now,
                received_at=now,
            )
            ids.append(vehicle.id)
        return ids

    _make.fleet = fleet
    return _make


@pytest.fixture
def vehicles(mqtt_cfg):
    fleets = []

    def _vehicles(behaviour=None) -> FakeFleet:
        fake = FakeFleet(mqtt_cfg, behaviour)
        fleets.append(fake)
        return fake

    yield _vehicles
    for fake in fleets:
        fake.close()


def submit(fleet, power_kw: float, duration_s: float = 600, signal_type: str = "FCR"):
    signal, dispatch = services.signal_submit(
        signal_type=signal_type, power_kw=power_kw, duration_s=duration_s, fleet_id=fleet.id
    )
    return signal, dispatch


def settled(signal_id, timeout_s: float = 30) -> list[Dispatch]:
    """Wait until every round of the signal is final. A fallback round is opened
    in the same transaction that finalises the round before it, so this is
    never seen between the two."""

    def done():
        rounds = list(Dispatch.objects.filter(signal_id=signal_id).order_by("round"))
        return rounds if rounds and all(r.is_final for r in rounds) else None

    return wait_for(done, timeout_s, "the dispatch to finish")


def test_all_vehicles_ack(celery_worker, mqtt_bridge, make_fleet, vehicles, client):
    ids = make_fleet(4)
    fake = vehicles()
    dispatched_before = metric_value(client, "vehicles_dispatched_total", signal_type="FCR")
    latency_before = metric_value(client, "dispatch_execution_latency_seconds_count", signal_type="FCR")

    signal, dispatch = submit(make_fleet.fleet, 20.0)
    rounds = settled(signal.id)

    assert [r.status for r in rounds] == [DispatchStatus.COMPLETED]
    assert rounds[0].acknowledged_kw == pytest.approx(20.0)
    commands = list(Command.objects.filter(dispatch=dispatch))
    assert sorted(c.vehicle_id for c in commands) == ids
    assert all(c.status == CommandStatus.ACKED and c.power_kw == pytest.approx(5.0) for c in commands)
    assert all(c.latency_s is not None and 0 <= c.latency_s < 5 for c in commands)
    # What the vehicles received follows SPEC §5.
    payload = fake.received_for(dispatch.id)[0]
    assert set(payload) == {
        "command_id", "dispatch_id", "vehicle_id", "signal_type", "power_kw", "start_at", "duration_s",
        "valid_until", "issued_at",
    }  # fmt: skip
    assert datetime.fromisoformat(payload["valid_until"]) == signal.valid_until
    # The dispatch log has one record per vehicle, acknowledged.
    entries = DispatchLogEntry.objects.filter(dispatch_id=dispatch.id)
    assert entries.count() == 4 and all(e.acknowledged and e.signal_type == "FCR" for e in entries)
    # Metrics produced in the worker and the bridge are visible on this process's scrape.
    assert metric_value(client, "vehicles_dispatched_total", signal_type="FCR") == dispatched_before + 4
    assert (
        metric_value(client, "dispatch_execution_latency_seconds_count", signal_type="FCR")
        == latency_before + 4
    )
    assert metric_value(client, "ack_rate", signal_type="FCR") == 1.0


def test_a_vehicle_that_never_acks_times_out_and_its_power_goes_to_the_others(
    celery_worker, mqtt_bridge, make_fleet, vehicles, client
):
    ids = make_fleet(4)
    vehicles({ids[0]: "silent"})
    signal, dispatch = submit(make_fleet.fleet, 20.0)
    rounds = settled(signal.id)

    assert rounds[0].status == DispatchStatus.PARTIAL
    assert rounds[0].acknowledged_kw == pytest.approx(15.0)
    silent = Command.objects.get(dispatch=dispatch, vehicle_id=ids[0])
    assert silent.status == CommandStatus.TIMED_OUT and "no ack within 2 s" in silent.reason
    assert len(rounds) == 2 and rounds[1].target_kw == pytest.approx(5.0)
    assert rounds[1].status == DispatchStatus.COMPLETED
    fallback = Command.objects.filter(dispatch=rounds[1])
    assert ids[0] not in {c.vehicle_id for c in fallback}
    # The others now hold 5 + their share of 5 kW, each within its 10 kW rating.
    assert sum(c.allocated_kw for c in fallback) == pytest.approx(5.0)
    assert all(c.power_kw <= 10.0 for c in fallback)
    assert services.signal_acknowledged_kw(signal.id) == pytest.approx(20.0)
    log = DispatchLogEntry.objects.filter(signal_id=signal.id)
    assert log.filter(fallback_round=1).count() == fallback.count()
    assert not log.get(vehicle_id=ids[0]).acknowledged
    assert metric_value(client, "ack_rate", signal_type="FCR") == 1.0  # the latest round


def test_non_v2g_unavailable_and_low_soc_vehicles_are_excluded(
    celery_worker, mqtt_bridge, make_fleet, vehicles
):
    good = make_fleet(2)
    not_v2g = make_fleet(1, is_v2g=False)
    unplugged = make_fleet(1, plugged_in=False)
    low = make_fleet(1, soc=0.25)
    stale = make_fleet(1)
    VehicleState.objects.filter(vehicle_id=stale[0]).update(received_at=timezone.now() - timedelta(hours=2))
    fake = vehicles()
    signal, dispatch = submit(make_fleet.fleet, 10.0)
    settled(signal.id)

    assert {c["vehicle_id"] for c in fake.received_for(dispatch.id)} == set(good)
    dispatch.refresh_from_db()
    assert set(dispatch.excluded) == {*not_v2g, *unplugged, *low, *stale}
    assert "V2G" in dispatch.excluded[not_v2g[0]]


def test_a_vehicle_that_disconnects_between_two_signals_is_not_used_again(
    celery_worker, mqtt_bridge, make_fleet, vehicles, mqtt_cfg
):
    ids = make_fleet(3)
    fake = vehicles()
    first, dispatch = submit(make_fleet.fleet, 9.0, duration_s=1.5)
    settled(first.id)
    assert len(fake.received_for(dispatch.id)) == 3

    # The vehicle unplugs and says so on its state topic; the bridge records it.
    state = {"vehicle_id": ids[1], "soc": 0.7, "plugged_in": False, "power_kw": 0.0,
             "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
    fake.send(f"v2g/vehicle/state/{ids[1]}", json.dumps(state))
    wait_for(
        lambda: not VehicleState.objects.get(vehicle_id=ids[1]).plugged_in, 10, "the state to be recorded"
    )

    wait_for(lambda: timezone.now() > first.valid_until, 5, "the first signal to end")
    second, dispatch2 = submit(make_fleet.fleet, 9.0)
    settled(second.id)
    assert {c["vehicle_id"] for c in fake.received_for(dispatch2.id)} == {ids[0], ids[2]}


def test_a_rejected_ack_is_recorded_with_its_reason(celery_worker, mqtt_bridge, make_fleet, vehicles):
    ids = make_fleet(2)
    vehicles({ids[1]: "reject"})
    signal, dispatch = submit(make_fleet.fleet, 10.0)
    rounds = settled(signal.id)
    rejected = Command.objects.get(dispatch=dispatch, vehicle_id=ids[1])
    assert rejected.status == CommandStatus.REJECTED and rejected.reason == "driver override"
    assert rounds[0].status == DispatchStatus.PARTIAL
    assert DispatchLogEntry.objects.get(command_id=rejected.id).status == "rejected"


def test_zero_power_then_two_quick_signals(celery_worker, mqtt_bridge, make_fleet, vehicles):
    ids = make_fleet(4)
    fake = vehicles()
    zero, zero_dispatch = submit(make_fleet.fleet, 0.0)
    first, d1 = submit(make_fleet.fleet, 10.0)
    second, d2 = submit(make_fleet.fleet, 10.0, signal_type="aFRR")
    assert [r.status for r in settled(zero.id)] == [DispatchStatus.ZERO_POWER]
    assert not Command.objects.filter(dispatch=zero_dispatch).exists()
    assert fake.received_for(zero_dispatch.id) == []
    settled(first.id)
    settled(second.id)
    first_vehicles = {c.vehicle_id for c in Command.objects.filter(dispatch=d1)}
    second_vehicles = {c.vehicle_id for c in Command.objects.filter(dispatch=d2)}
    # A vehicle held by one signal is not committed to the other at the same time.
    assert not first_vehicles & second_vehicles
    assert first_vehicles | second_vehicles <= set(ids)


def test_duplicate_malformed_late_and_unknown_acks_never_double_count(
    celery_worker, mqtt_bridge, make_fleet, vehicles, client
):
    ids = make_fleet(2)
    fake = vehicles({ids[0]: "twice", ids[1]: "silent"})
    malformed_before = metric_value(client, "dispatch_acks_total", outcome="malformed")
    signal, dispatch = submit(make_fleet.fleet, 10.0)
    wait_for(lambda: len(fake.received_for(dispatch.id)) == 2, 10, "both commands")
    silent = next(c for c in fake.received_for(dispatch.id) if c["vehicle_id"] == ids[1])

    malformed = [
        {"command_id": "not-a-uuid", "status": "accepted"},
        {"command_id": str(uuid.uuid4()), "vehicle_id": ids[1], "status": "maybe"},
    ]
    for bad in malformed:
        fake.send(f"vehicle/{ids[1]}/ack", json.dumps(bad))
    # Another vehicle claiming this vehicle's command, on its own topic.
    stolen = {"command_id": silent["command_id"], "vehicle_id": ids[0], "status": "accepted"}
    fake.send(f"vehicle/{ids[0]}/ack", json.dumps(stolen))
    fake.send(f"vehicle/{ids[1]}/ack", b"\x00not json")
    unknown = {"command_id": str(uuid.uuid4()), "vehicle_id": ids[1], "status": "accepted"}
    fake.send(f"vehicle/{ids[1]}/ack", json.dumps(unknown))

    rounds = settled(signal.id)
    assert rounds[0].acknowledged_kw == pytest.approx(5.0)  # the double ack counted once
    assert Command.objects.get(id=silent["command_id"]).status == CommandStatus.TIMED_OUT
    late = {"command_id": silent["command_id"], "vehicle_id": ids[1], "status": "accepted"}
    fake.send(f"vehicle/{ids[1]}/ack", json.dumps(late))
    wait_for(lambda: Command.objects.get(id=silent["command_id"]).late_ack_at is not None, 10, "the late ack")
    command = Command.objects.get(id=silent["command_id"])
    assert command.status == CommandStatus.TIMED_OUT  # late: logged, not counted
    assert services.signal_acknowledged_kw(signal.id) == pytest.approx(
        sum(d.acknowledged_kw for d in Dispatch.objects.filter(signal=signal))
    )
    log_text = mqtt_bridge["log"].read_text()
    assert "command_id is not a UUID" in log_text
    assert "status must be one of accepted, rejected" in log_text
    assert f"not its vehicle {ids[1]}" in log_text
    assert f"ack for unknown command {unknown['command_id']}" in log_text
    assert f"late ack for command {silent['command_id']}" in log_text
    assert metric_value(client, "dispatch_acks_total", outcome="malformed") >= malformed_before + 2
    assert mqtt_bridge["process"].poll() is None


def test_a_publish_that_keeps_failing_is_retried_then_given_up(celery_worker, make_fleet, tmp_path, client):
    """A worker whose broker is unreachable: each vehicle is retried with backoff,
    then marked failed; finalising the round hands its power to fallback."""
    ids = make_fleet(2)
    failures_before = metric_value(client, "mqtt_publish_failure_total")
    queue = f"dead-mqtt-{secrets.token_hex(3)}"
    log_path = tmp_path / "dead-worker.log"
    worker = start_worker(
        log_path, queue, concurrency=1,
        K_MQTT__URL="tcp://127.0.0.1:9", K_MQTT__MAX_RETRIES="2", K_MQTT__CONNECT_TIMEOUT_S="0.3",
    )  # fmt: skip
    try:
        worker_ready(queue, log_path)
        now = timezone.now()
        signal = FlexibilitySignal.objects.create(
            signal_type="mFRR",
            power_kw=10,
            start_at=now,
            duration_s=600,
            valid_until=now + timedelta(minutes=10),
        )
        dispatch = Dispatch.objects.create(
            signal=signal, target_kw=10, allocated_kw=10, status=DispatchStatus.COLLECTING,
            deadline_at=now + timedelta(seconds=30),
        )  # fmt: skip
        commands = [
            Command.objects.create(
                dispatch=dispatch, vehicle_id=vid, power_kw=5, allocated_kw=5, valid_until=signal.valid_until
            )
            for vid in ids
        ]
        from dispatch.tasks import commands_publish_task

        commands_publish_task.apply_async(args=[[str(c.id) for c in commands], 0], queue=queue)
        wait_for(
            lambda: all(c.status == CommandStatus.FAILED for c in Command.objects.filter(dispatch=dispatch)),
            30, "the commands to be given up",
        )  # fmt: skip
    finally:
        stop_process(worker)
    for command in Command.objects.filter(dispatch=dispatch):
        assert command.attempts == 3  # the first try and two retries
        assert "publish failed after 3 attempt(s)" in command.reason
        assert "unreachable" in command.reason
    assert metric_value(client, "mqtt_publish_failure_total") >= failures_before + 6

    assert services.dispatch_finalize(dispatch.id) == DispatchStatus.FAILED
    fallback = Dispatch.objects.get(signal=signal, round=1)
    assert fallback.target_kw == pytest.approx(10.0)


def test_expired_setpoints_are_never_published(celery_worker, make_fleet, vehicles):
    ids = make_fleet(1)
    fake = vehicles()
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=5, start_at=now - timedelta(minutes=5), duration_s=60,
        valid_until=now - timedelta(seconds=1),
    )  # fmt: skip
    dispatch = Dispatch.objects.create(
        signal=signal, target_kw=5, status=DispatchStatus.COLLECTING, deadline_at=now
    )
    command = Command.objects.create(
        dispatch=dispatch, vehicle_id=ids[0], power_kw=5, allocated_kw=5, valid_until=signal.valid_until
    )
    outcome = services.commands_publish([str(command.id)], 0)
    assert outcome.expired == 1 and outcome.published == 0
    command.refresh_from_db()
    assert command.status == CommandStatus.FAILED and "expired" in command.reason
    assert fake.received_for(dispatch.id) == []


def test_the_sweep_finishes_rounds_left_by_a_crashed_worker(celery_worker, mqtt_bridge, make_fleet, vehicles):
    ids = make_fleet(2)
    vehicles()
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=10, start_at=now, duration_s=600, valid_until=now + timedelta(minutes=10)
    )
    # As a worker that died after storing the commands and before publishing them would leave it:
    dispatch = Dispatch.objects.create(
        signal=signal, target_kw=10, allocated_kw=10, status=DispatchStatus.COLLECTING,
        deadline_at=now + timedelta(seconds=60),
    )  # fmt: skip
    Dispatch.objects.filter(id=dispatch.id).update(created_at=now - timedelta(minutes=1))
    for vid in ids:
        Command.objects.create(
            dispatch=dispatch, vehicle_id=vid, power_kw=5, allocated_kw=5, valid_until=signal.valid_until
        )
    counts = services.dispatch_sweep()
    assert counts["publishes"] >= 1
    wait_for(
        lambda: Command.objects.filter(dispatch=dispatch, status=CommandStatus.ACKED).count() == 2,
        15, "the swept commands to be published and acked",
    )  # fmt: skip
    # A collector that was lost: past the deadline the sweep finalises the round itself.
    Dispatch.objects.filter(id=dispatch.id).update(deadline_at=now - timedelta(minutes=1))
    services.dispatch_sweep()
    dispatch.refresh_from_db()
    assert dispatch.status == DispatchStatus.COMPLETED and dispatch.acknowledged_kw == pytest.approx(10)
    assert services.dispatch_sweep()["finalised"] == 0  # idempotent
