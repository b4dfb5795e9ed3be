"""Logs of a real dispatch: a real worker logging JSON (logging.format json, as
in production), the real bridge recording the vehicles' acks; and the ack
handling's per-vehicle lines."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from dispatch.services import acks_record
from dispatch.tasks import dispatch_allocate_task
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from tests.conftest import start_worker, stop_process, wait_for, worker_ready
from v2g_project import mqtt
from v2g_project.bridge import Message

REQUIRED = ("time", "level", "logger", "message")


def make_vehicles(prefix: str, count: int) -> tuple[Fleet, list[str]]:
    fleet = Fleet.objects.create(id=f"{prefix}-fleet", name="Logging test")
    now = timezone.now()
    ids = []
    for n in range(count):
        vehicle = Vehicle.objects.create(
            id=f"{prefix}-ev-{n}", fleet=fleet, battery_kwh=60.0, max_charge_kw=11.0, max_discharge_kw=10.0
        )
        VehicleState.objects.create(
            vehicle=vehicle, soc=0.8, plugged_in=True, reported_at=now, received_at=now
        )
        ids.append(vehicle.id)
    return fleet, ids


@pytest.fixture
def acking(mqtt_client):
    """acking(vehicle_ids): those vehicles (only: other tests share the broker)
    accept every command they get."""

    def on_command(client, _userdata, message) -> None:
        command = json.loads(message.payload)
        ack = {
            "command_id": command["command_id"],
            "vehicle_id": command["vehicle_id"],
            "status": "accepted",
            "timestamp": datetime.now(UTC).isoformat(),
        }
        client.publish(f"vehicle/{command['vehicle_id']}/ack", json.dumps(ack), qos=1)

    def _acking(vehicle_ids: list[str]) -> None:
        for vehicle_id in vehicle_ids:
            topic = f"vehicle/{vehicle_id}/command"
            mqtt_client.message_callback_add(topic, on_command)
            result, _mid = mqtt_client.subscribe(topic, qos=1)
            assert result == 0
        # One more round trip: the broker has handled the subscriptions before it.
        mqtt.publish_wait(mqtt_client, f"v2g-test/{secrets.token_hex(4)}", b"{}", qos=1, timeout_s=5)

    return _acking


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_dispatch_in_json_logs_names_its_dispatch_signal_and_task(mqtt_bridge, acking, tmp_path):
    prefix = f"log{secrets.token_hex(3)}"
    fleet, ids = make_vehicles(prefix, 2)
    acking(ids)
    # The worker's own default queue: the publishes and the collector it
    # enqueues come back to it, not to another test's worker.
    queue = f"json-logs-{secrets.token_hex(3)}"
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        log_path,
        queue,
        concurrency=1,
        K_LOGGING__FORMAT="json",
        K_CELERY__DEFAULT_QUEUE=queue,
        K_SENTRY__DSN="",
    )
    try:
        worker_ready(queue, log_path)
        now = timezone.now()
        signal = FlexibilitySignal.objects.create(
            signal_type="aFRR", power_kw=12.0, start_at=now, duration_s=600,
            valid_until=now + timedelta(minutes=10), fleet=fleet,
        )  # fmt: skip
        dispatch = Dispatch.objects.create(signal=signal, round=0, target_kw=12.0)
        dispatch_allocate_task.apply_async(args=[str(dispatch.id)], queue=queue)
        wait_for(
            lambda: Dispatch.objects.filter(id=dispatch.id, status=DispatchStatus.COMPLETED).exists(),
            30, "the dispatch to complete",
        )  # fmt: skip

        def about_it() -> list[dict]:
            lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("dispatch_id") == str(dispatch.id)]

        # The finalisation line is written just after the status it reports.
        lines = wait_for(lambda: len(about_it()) >= 2 and about_it(), 10, "the dispatch's log lines")
    finally:
        stop_process(worker)

    # Every log line of the worker is one JSON object with the required fields
    # (the banner Celery prints at start is not a log line: `celery -q` drops it).
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert records and all(all(field in r for field in REQUIRED) for r in records)
    allocated = next(r for r in lines if "allocated" in r["message"])
    finalised = next(r for r in lines if "acknowledged by" in r["message"])
    assert allocated["logger"] == finalised["logger"] == "dispatch.services"
    assert allocated["signal_type"] == finalised["signal_type"] == "aFRR"
    assert allocated["task"] == "dispatch.allocate" and finalised["task"] == "dispatch.collect"
    # The task id is the one of Celery's own "received" line for that task.
    received = next(
        r
        for r in records
        if r["message"].endswith("received")
        and r.get("task") == "dispatch.allocate"
        and str(dispatch.id) in r["data"]["args"]
    )
    assert allocated["task_id"] == received["task_id"] and uuid.UUID(allocated["task_id"])
    assert "2/2 vehicle(s)" in finalised["message"] and finalised["level"] == "INFO"


@pytest.mark.django_db
def test_ack_lines_name_the_vehicle_and_the_dispatch(caplog):
    _fleet, (vehicle_id,) = make_vehicles(f"ack{secrets.token_hex(3)}", 1)
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=5, start_at=now, duration_s=60, valid_until=now + timedelta(minutes=1)
    )
    dispatch = Dispatch.objects.create(
        signal=signal, target_kw=5, status=DispatchStatus.COLLECTING, deadline_at=now
    )
    late = Command.objects.create(
        dispatch=dispatch, vehicle_id=vehicle_id, power_kw=5, allocated_kw=5, valid_until=signal.valid_until,
        status=CommandStatus.TIMED_OUT,
    )  # fmt: skip

    def ack(command_id) -> Message:
        payload = {"command_id": str(command_id), "vehicle_id": vehicle_id, "status": "accepted"}
        return Message(f"vehicle/{vehicle_id}/ack", payload, timezone.now())

    with caplog.at_level(logging.INFO, logger="dispatch.services"):
        counts = acks_record([ack(late.id), ack(uuid.uuid4())], "vehicle/+/ack")
    assert (counts["late"], counts["unknown"]) == (1, 1)
    late_line = next(r for r in caplog.records if r.getMessage().startswith("late ack"))
    unknown_line = next(r for r in caplog.records if r.getMessage().startswith("ack for unknown"))
    assert (late_line.vehicle_id, late_line.dispatch_id) == (vehicle_id, str(dispatch.id))
    assert unknown_line.vehicle_id == vehicle_id
