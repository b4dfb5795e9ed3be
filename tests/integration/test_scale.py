"""Scaling out (README "Scaling out"): a dispatch worker and a background worker
on separate queues, and two MQTT bridges sharing the acks and telemetry through
an MQTT 5 shared subscription. Real processes on the real Redis, Mosquitto and
database; the vehicles are the simulator's.

Everything here uses queues and topics of its own, so the session's worker and
bridge (plain subscriptions to the default topics) never see this traffic.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from dispatch.tasks import dispatch_allocate_task
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState, VehicleStateHistory
from tests.conftest import (
    ROOT,
    replace,
    start_worker,
    stop_process,
    subprocess_env,
    wait_for,
    worker_ready,
)
from v2g_project.celery import app

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

VEHICLES = 24


@pytest.fixture(scope="module")
def split(django_db_setup, tmp_path_factory):
    """A dispatch worker (-Q <dispatch queue>) and a background worker (-Q
    <background queue>: telemetry, planning, kpis), one process each, routing
    their follow-up tasks by the platform's routes to this module's queues."""
    name = f"scale{secrets.token_hex(3)}"
    dispatch_q, background_q = f"{name}-dispatch", f"{name}-background"
    env = {
        "K_CELERY__DEFAULT_QUEUE": dispatch_q,
        "K_CELERY__QUEUES__DISPATCH": dispatch_q,
        "K_CELERY__QUEUES__TELEMETRY": background_q,
        "K_CELERY__QUEUES__PLANNING": background_q,
        "K_CELERY__QUEUES__KPIS": background_q,
        "K_MQTT__COMMAND_TOPIC": f"{name}/vehicle/{{vehicle_id}}/command",
        "K_MQTT__ACK_TOPIC": f"{name}/vehicle/+/ack",
        "K_MQTT__QOS__TELEMETRY": "1",
        "K_TELEMETRY__STATE_TOPIC_PREFIX": f"{name}/state",
        "K_TELEMETRY__RESPONSE_TOPIC_PREFIX": f"{name}/response",
        "K_TELEMETRY__DISCOVERY_RESPONSE_PREFIX": f"{name}/discovered",
        "K_TELEMETRY__LWT_TOPIC_PREFIX": f"{name}/lwt",
    }
    logs = tmp_path_factory.mktemp("scale")
    procs = {
        "dispatch": start_worker(logs / "dispatch.log", dispatch_q, concurrency=1, **env),
        "background": start_worker(
            logs / "background.log",
            background_q,
            concurrency=1,
            extra_args=("--include", "tests.scale_tasks"),
            **env,
        ),
    }
    try:
        worker_ready(dispatch_q, logs / "dispatch.log")
        worker_ready(background_q, logs / "background.log")
        yield {"name": name, "dispatch_q": dispatch_q, "background_q": background_q, "env": env, "logs": logs}
    finally:
        for proc in procs.values():
            stop_process(proc)


def fleet_make(prefix: str, count: int, *, states: bool) -> Fleet:
    fleet = Fleet.objects.create(id=prefix.rstrip("-"), name="Scale fleet")
    now = timezone.now()
    for n in range(count):
        vehicle = Vehicle.objects.create(
            id=f"{prefix}{n:04d}", fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11
        )
        if states:
            VehicleState.objects.create(
                vehicle=vehicle, soc=0.8, plugged_in=True, reported_at=now, received_at=now
            )
    return fleet


def dispatch_start(fleet: Fleet, power_kw: float, queue: str) -> FlexibilitySignal:
    """A signal and its first round, allocated by the dispatch worker (its
    publishes and collectors follow by the worker's own routes)."""
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=power_kw, start_at=now, duration_s=600,
        valid_until=now + timedelta(minutes=10), fleet=fleet,
    )  # fmt: skip
    dispatch = Dispatch.objects.create(signal=signal, round=0, target_kw=power_kw)
    dispatch_allocate_task.apply_async(args=[str(dispatch.id)], queue=queue)
    return signal


def settled(signal: FlexibilitySignal, timeout_s: float) -> list[Dispatch]:
    def done():
        rounds = list(Dispatch.objects.filter(signal=signal).order_by("round"))
        return rounds if rounds and all(r.is_final for r in rounds) else None

    return wait_for(done, timeout_s, "the dispatch to finish")


def received(log: Path, task: str) -> int:
    return len(re.findall(rf"Task {re.escape(task)}\[[-0-9a-f]+\] received", log.read_text()))


def test_a_long_background_job_never_delays_a_dispatch(split, tmp_path):
    """The background worker is held by a long job, a second one waiting behind
    it: a whole dispatch (allocation, publish, ack collection, time-out and
    fallback) still runs to its end on the dispatch worker meanwhile."""
    fleet = fleet_make(f"{split['name']}a-", 4, states=True)
    release = tmp_path / "release"
    jobs = [
        app.send_task("kpis.test_busy", args=[str(release)], queue=split["background_q"]) for _ in range(2)
    ]
    try:
        wait_for(lambda: jobs[0].state == "STARTED", 30, "the long job to start")
        signal = dispatch_start(fleet, 20.0, split["dispatch_q"])
        rounds = settled(signal, 30)
        # Nobody listens on this module's command topic: the round times out
        # (2 s) and its power goes to fallback, which finds no vehicle that acked.
        assert rounds[0].status == DispatchStatus.FAILED
        commands = Command.objects.filter(dispatch=rounds[0])
        assert commands.count() == 4 and all(c.published_at is not None for c in commands)
        # ... all while the background worker was still on its first job.
        assert (jobs[0].state, jobs[1].state) == ("STARTED", "PENDING")
    finally:
        release.touch()
    assert all(job.get(timeout=30)["held_s"] < 60 for job in jobs)
    dispatch_log, background_log = split["logs"] / "dispatch.log", split["logs"] / "background.log"
    for task in ("dispatch.allocate", "dispatch.publish", "dispatch.collect"):
        assert received(dispatch_log, task) >= 1 and received(background_log, task) == 0, task
    assert received(background_log, "kpis.test_busy") == 2 and received(dispatch_log, "kpis.test_busy") == 0


def simulator_start(name: str, prefix: str, log: Path) -> subprocess.Popen:
    topics = (
        "--command-topic", f"{name}/vehicle/{{vehicle_id}}/command", "--ack-topic", f"{name}/vehicle/{{vehicle_id}}/ack",
        "--state-topic", f"{name}/state/{{vehicle_id}}",
        "--telemetry-response-topic", f"{name}/response/{{vehicle_id}}",
        "--discovery-response-topic", f"{name}/discovered/{{vehicle_id}}", "--lwt-topic-prefix", f"{name}/lwt",
    )  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "simulator", "--count", str(VEHICLES), "--prefix", prefix,
             "--url", settings.V2G.mqtt.url, "--seed", "7", "--profiles", "always=1", "--v2g-share", "1",
             "--telemetry-interval-s", "1", "--status-interval-s", "0", "--telemetry-qos", "1", *topics],
            cwd=ROOT, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def bridge_counts(log: Path) -> dict[str, int]:
    """What one bridge handled, by route, from its stop line."""
    line = re.search(r"bridge stopped; handled (\d+) message\(s\)(?:: (.*))?", log.read_text())
    assert line, log.read_text()[-3000:]
    return {route: int(n) for route, n in re.findall(r"(\w+) (\d+)", line[2] or "")}


def test_two_bridges_share_acks_and_states_and_handle_each_once(split, bridges, tmp_path):
    prefix = f"{split['name']}b-"
    fleet = fleet_make(prefix, VEHICLES, states=False)
    group = f"{split['name']}-bridges"
    pair = [bridges(**split["env"], K_MQTT__SHARED_GROUP=group) for _ in range(2)]
    for bridge in pair:
        assert f"$share/{group}/{split['name']}/vehicle/+/ack" in bridge["log"].read_text()
    sim_log = tmp_path / "simulator.log"
    sim = simulator_start(split["name"], prefix, sim_log)
    try:
        wait_for(
            lambda: VehicleState.objects.filter(vehicle__fleet=fleet).count() == VEHICLES, 30, "every state"
        )
        signal = dispatch_start(fleet, 2.0 * VEHICLES, split["dispatch_q"])
        rounds = settled(signal, 30)
        assert [r.status for r in rounds] == [DispatchStatus.COMPLETED]
        commands = Command.objects.filter(dispatch=rounds[0])
        assert commands.count() == VEHICLES
        assert not commands.exclude(status=CommandStatus.ACKED).exists()
    finally:
        stop_process(sim)
    stopped = re.search(r"sim stopped .*\backs=(\d+) .*\bstates=(\d+)", sim_log.read_text())
    assert stopped, sim_log.read_text()[-3000:]
    acks, states = int(stopped[1]), int(stopped[2])
    assert acks == VEHICLES
    # Every state the vehicles sent is recorded (QoS 1), each once.
    history = VehicleStateHistory.objects.filter(vehicle__fleet=fleet)
    wait_for(lambda: history.count() == states, 15, f"{states} states in the history")
    for bridge in pair:
        stop_process(bridge["process"])
        assert bridge["process"].returncode == 0
    counts = [bridge_counts(bridge["log"]) for bridge in pair]
    # Each message went to one bridge of the group: no ack or state handled twice,
    # none lost, and both bridges took a share of each.
    assert sum(c.get("ack", 0) for c in counts) == acks
    assert sum(c.get("state", 0) for c in counts) == states
    assert all(c.get("ack", 0) > 0 and c.get("state", 0) > 0 for c in counts), counts
    print(f"bridge shares (ack, state): {[(c.get('ack'), c.get('state')) for c in counts]}")


def test_health_names_a_queue_no_worker_consumes(split, settings, capsys):
    celery = settings.V2G.celery
    queues = replace(celery.queues, dispatch=split["dispatch_q"], telemetry=split["background_q"])
    queues = replace(queues, planning=split["background_q"], kpis=f"{split['name']}-nobody")
    settings.V2G = replace(
        settings.V2G, celery=replace(celery, default_queue=split["dispatch_q"], queues=queues)
    )
    with pytest.raises(CommandError, match="unavailable: queues"):
        call_command("health", "--worker", "--timeout", "3")
    assert f"no worker answered on queue(s) {split['name']}-nobody within 3.0s" in capsys.readouterr().out

    settings.V2G = replace(
        settings.V2G,
        celery=replace(
            celery, default_queue=split["dispatch_q"], queues=replace(queues, kpis=split["background_q"])
        ),
    )
    call_command("health", "--worker", "--timeout", "10")
    assert (
        f"a worker answered on each of {split['dispatch_q']}, {split['background_q']}"
        in capsys.readouterr().out
    )


def test_one_worker_on_every_queue_takes_dispatch_work_before_waiting_background_work(tmp_path):
    """A single worker (one process) consuming a dispatch and a background
    queue: a dispatch-class task sent after two long jobs runs as soon as the
    first one ends, before the second (Redis priorities, v2g_project/queues.py)."""
    name = f"one{secrets.token_hex(3)}"
    dispatch_q, background_q = f"{name}-dispatch", f"{name}-background"
    log = tmp_path / "worker.log"
    worker = start_worker(
        log, f"{dispatch_q},{background_q}", concurrency=1, extra_args=("--include", "tests.scale_tasks")
    )
    try:
        worker_ready(dispatch_q, log)
        releases = [tmp_path / "release-1", tmp_path / "release-2"]
        jobs = [app.send_task("kpis.test_busy", args=[str(r)], queue=background_q) for r in releases]
        wait_for(lambda: jobs[0].state == "STARTED", 30, "the first long job to start")
        marked = app.send_task("dispatch.test_mark", queue=dispatch_q)
        releases[0].touch()
        ran_at = marked.get(timeout=30)
        releases[1].touch()
        second = jobs[1].get(timeout=30)
    finally:
        for release in releases:
            release.touch()
        stop_process(worker)
    assert ran_at < second["started"]
