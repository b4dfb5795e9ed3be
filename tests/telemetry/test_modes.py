"""Telemetry through the real processes: hybrid mode, staleness, retention and
vehicles' Last Wills, with simulated vehicles (``python -m simulator``), the
real broker, bridge and Celery worker.

The platform processes here run with the configuration these behaviours need
(hybrid mode, a 2-second staleness, 2 days of retention), set as a deployment
would, by K_ environment overrides; the worker has a queue of its own so that
the session worker (default configuration) never takes its tasks.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from dispatch.models import Command, Dispatch, DispatchStatus
from fleet.models import Fleet, Vehicle
from telemetry.models import PollStatus, TelemetryPoll, VehicleState, VehicleStateHistory
from telemetry.tasks import telemetry_poll_task, telemetry_purge_task
from tests.conftest import (
    ROOT,
    database_url,
    queue_env,
    replace,
    start_worker,
    stop_process,
    subprocess_env,
    wait_for,
    worker_ready,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

STALE_AFTER_S = 2
RETENTION_DAYS = 2
# Telemetry topics of this module's own: only its bridge and worker use them.
TOPICS = f"v2g-test/{secrets.token_hex(4)}"
TELEMETRY_ENV = {
    "K_TELEMETRY__MODE": "hybrid",
    "K_TELEMETRY__STATE_TOPIC_PREFIX": f"{TOPICS}/state",
    "K_TELEMETRY__REQUEST_TOPIC": f"{TOPICS}/request",
    "K_TELEMETRY__RESPONSE_TOPIC_PREFIX": f"{TOPICS}/response",
    "K_TELEMETRY__TIMEOUT_SECONDS": "1",
    "K_TELEMETRY__STALE_AFTER_SECONDS": str(STALE_AFTER_S),
    "K_TELEMETRY__RETENTION_DAYS": str(RETENTION_DAYS),
}
SIM_TOPICS = (
    *("--state-topic", f"{TOPICS}/state/{{vehicle_id}}"),
    *("--telemetry-request-topic", f"{TOPICS}/request"),
    *("--telemetry-response-topic", f"{TOPICS}/response/{{vehicle_id}}"),
)


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    """This module's worker: TELEMETRY_ENV, on a queue of its own (its follow-up
    tasks too, by K_CELERY__DEFAULT_QUEUE). Yields the queue name."""
    queue = f"modes-{secrets.token_hex(3)}"
    log_path = tmp_path_factory.mktemp("modes-worker") / "worker.log"
    proc = start_worker(log_path, queue, K_CELERY__DEFAULT_QUEUE=queue, **TELEMETRY_ENV)
    try:
        worker_ready(queue, log_path)
        yield queue
    finally:
        stop_process(proc)


@pytest.fixture
def stale_after(settings):
    """This process (the web side: the status endpoint) with the workers' staleness."""
    settings.V2G = replace(
        settings.V2G, telemetry=replace(settings.V2G.telemetry, stale_after_seconds=STALE_AFTER_S)
    )


@dataclass
class Sim:
    proc: subprocess.Popen
    ids: list[str]
    log: Path
    lwt_topic: str  # "" when it sets no Last Will


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.objects.create(id=f"t{secrets.token_hex(3)}-fleet", name="simulated")


@pytest.fixture
def sims(tmp_path, fleet, mqtt_client):
    """sims(count, *options, prefix=None) -> Sim: ``python -m simulator`` with
    vehicles always plugged in, pushing their state every 0.3 s, registered
    in ``fleet``. A prefix already registered is reused (the same vehicles)."""
    started: list[Sim] = []

    def start(count: int, *options: str, prefix: str | None = None) -> Sim:
        prefix = prefix or f"t{secrets.token_hex(3)}-ev-"
        log_path = tmp_path / f"sim-{len(started)}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "simulator", "--count", str(count), "--prefix", prefix,
                    "--profiles", "always=1", "--telemetry-interval-s", "0.3", "--status-interval-s", "0",
                    "--seed", "7", *options,
                ],
                cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        ready = wait_for(
            lambda: re.search(r"sim ready .* lwt=(\S+)", log_path.read_text()) or proc.poll() is not None,
            30,
            "the simulator",
        )
        assert proc.poll() is None, log_path.read_text()
        ids = [f"{prefix}{n:04d}" for n in range(count)]
        Vehicle.objects.bulk_create(
            [
                Vehicle(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=10)
                for vid in ids
            ],
            ignore_conflicts=True,
        )
        started.append(Sim(proc, ids, log_path, "" if ready[1] == "off" else ready[1]))
        return started[-1]

    yield start
    for sim in started:
        stop_process(sim.proc)
    # A killed simulator leaves its retained will on the broker: delete it, so
    # that no later bridge replays it.
    for topic in {sim.lwt_topic for sim in started} - {""}:
        mqtt_client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)


def online(ids: list[str]) -> int:
    return VehicleState.objects.filter(vehicle_id__in=ids, online=True).count()


def statuses(api, fleet: Fleet) -> dict[str, str]:
    body = api.get(f"/api/vehicles/status?fleet_id={fleet.id}").json()
    return {row["vehicle_id"]: row["current_status"] for row in body["results"]}


def signal_submit(queue: str, fleet: Fleet, power_kw: float) -> Dispatch:
    """``manage.py signal_submit``, enqueuing on this module's worker's queue."""
    result = subprocess.run(
        [sys.executable, "manage.py", "signal_submit", "--type", "FCR", "--power-kw", str(power_kw),
         "--duration-s", "60", "--fleet", fleet.id],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=subprocess_env(
            DATABASE_URL=database_url(django_settings.DATABASES["default"]),
            CELERY_BROKER_URL=django_settings.CELERY_BROKER_URL, **queue_env(queue),
        ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dispatch_id = re.search(r"^dispatch (\S+)$", result.stdout, re.MULTILINE)[1]
    return Dispatch.objects.get(id=dispatch_id)


def settled(dispatch: Dispatch) -> list[Dispatch]:
    def done():
        rounds = list(Dispatch.objects.filter(signal_id=dispatch.signal_id).order_by("round"))
        return rounds if all(r.is_final for r in rounds) else None

    return wait_for(done, 20, "the dispatch to finish")


@pytest.fixture(autouse=True)
def _settle_before_teardown():
    """Let a worker finish the rounds a test started before the database is flushed."""
    yield
    open_rounds = Dispatch.objects.filter(status__in=(DispatchStatus.PENDING, DispatchStatus.COLLECTING))
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not open_rounds.exists(), 6, "open dispatch rounds to finish")


# --- hybrid mode --------------------------------------------------------------------


def test_hybrid_mode_records_pushed_states_and_pull_answers_of_the_same_vehicles(worker, bridges, sims):
    bridge = bridges(**TELEMETRY_ENV)
    assert f"{TOPICS}/state/+, {TOPICS}/response/+" in bridge["log"].read_text()  # push and pull
    sim = sims(3, *SIM_TOPICS, "--lwt-topic-prefix", f"{TOPICS}/lwt")

    def pushed():
        return VehicleStateHistory.objects.filter(vehicle_id__in=sim.ids, source="push").values("vehicle_id")

    wait_for(lambda: pushed().distinct().count() == 3, 10, "pushed states of every vehicle")
    # What Beat runs every interval_seconds (not forced: in push mode it is skipped).
    started = telemetry_poll_task.apply_async(queue=worker).get(timeout=30)
    assert started["outcome"] == "started"
    poll = wait_for(
        lambda: TelemetryPoll.objects.filter(id=started["poll_id"], status=PollStatus.FINISHED).first(),
        15,
        "the pull round to finish",
    )
    assert (poll.manual, poll.expected, poll.answered, poll.timed_out) == (False, 3, 3, 0)
    for vehicle_id in sim.ids:
        history = VehicleStateHistory.objects.filter(vehicle_id=vehicle_id)
        assert history.filter(source="push").exists()
        assert history.filter(source="pull", poll=poll).count() == 1
    assert online(sim.ids) == 3


# --- staleness ----------------------------------------------------------------------


def test_a_vehicle_that_stops_pushing_goes_stale_and_gets_no_command(
    worker, mqtt_bridge, sims, fleet, api, stale_after
):
    fresh = sims(2)
    silent = sims(1)
    wait_for(lambda: online(fresh.ids + silent.ids) == 3, 10, "every vehicle's state")
    assert set(statuses(api, fleet).values()) == {"plugged_in"}
    stop_process(silent.proc)  # a clean stop: no Last Will, it just stops pushing

    wait_for(
        lambda: statuses(api, fleet)[silent.ids[0]] == "stale", STALE_AFTER_S + 5, "the vehicle to go stale"
    )
    dispatch = signal_submit(worker, fleet, 4.0)
    rounds = settled(dispatch)

    commanded = set(Command.objects.filter(dispatch__in=rounds).values_list("vehicle_id", flat=True))
    assert commanded == set(fresh.ids)
    dispatch.refresh_from_db()
    assert dispatch.excluded == {silent.ids[0]: "unavailable"}
    status = statuses(api, fleet)
    assert status[silent.ids[0]] == "stale"
    assert {status[v] for v in fresh.ids} <= {"dispatched", "plugged_in"}


# --- retention ------------------------------------------------------------------------


def test_the_purge_task_deletes_history_older_than_retention_days(worker):
    fleet = Fleet.objects.create(id="retention", name="retention")
    vehicle = Vehicle.objects.create(
        id="ret-ev-1", fleet=fleet, battery_kwh=50, max_charge_kw=7, max_discharge_kw=7
    )
    now = timezone.now()
    ages = {
        "old": timedelta(days=RETENTION_DAYS, hours=1),
        "recent": timedelta(days=RETENTION_DAYS, hours=-1),
    }
    rows = [
        VehicleStateHistory(
            vehicle=vehicle, soc=0.5, plugged_in=True, power_kw=0.0, source="push",
            reported_at=now - age - timedelta(minutes=n), received_at=now - age - timedelta(minutes=n),
        )
        for age in ages.values()
        for n in range(3)
    ]  # fmt: skip
    VehicleStateHistory.objects.bulk_create(rows)
    VehicleState.objects.create(vehicle=vehicle, soc=0.5, plugged_in=True, reported_at=now, received_at=now)

    # The task Beat runs daily, run by the real worker with its retention_days.
    assert telemetry_purge_task.apply_async(queue=worker).get(timeout=30) == 3
    kept = VehicleStateHistory.objects.filter(vehicle=vehicle)
    assert kept.count() == 3
    assert all(now - row.received_at < ages["old"] for row in kept)
    assert telemetry_purge_task.apply_async(queue=worker).get(timeout=30) == 0  # twice: harmless
    assert kept.count() == 3
    assert VehicleState.objects.filter(vehicle=vehicle).exists()  # the latest state is never purged


# --- Last Will ------------------------------------------------------------------------


def test_a_vehicle_whose_connection_drops_is_offline_and_gets_no_command(
    worker, mqtt_bridge, sims, fleet, api, subscribe
):
    staying = sims(2)
    dropping = sims(2)
    assert dropping.lwt_topic.startswith("v2g/vehicle/lwt/")
    wait_for(lambda: online(staying.ids + dropping.ids) == 4, 10, "every vehicle's state")
    wills = subscribe(dropping.lwt_topic)

    dropping.proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
    will = json.loads(wills.wait(2)[-1].payload)  # the retained birth first, then the will
    assert (will["status"], will["vehicle_ids"]) == ("offline", dropping.ids)
    wait_for(lambda: online(dropping.ids) == 0, 10, "the Last Will to mark the vehicles offline")
    status = statuses(api, fleet)
    assert {status[v] for v in dropping.ids} == {"offline"}
    assert {status[v] for v in staying.ids} == {"plugged_in"}

    dispatch = signal_submit(worker, fleet, 4.0)
    rounds = settled(dispatch)
    commanded = set(Command.objects.filter(dispatch__in=rounds).values_list("vehicle_id", flat=True))
    assert commanded == set(staying.ids)
    dispatch.refresh_from_db()
    assert set(dispatch.excluded) == set(dropping.ids)


def test_a_retained_will_replayed_to_a_restarted_bridge_spares_vehicles_back_online(bridges, sims, subscribe):
    """The broker keeps the will (retained) and replays it at every subscription:
    a bridge restarted after the vehicle came back must not mark it offline."""
    first = bridges()
    gone = sims(2)
    wait_for(lambda: online(gone.ids) == 2, 10, "the vehicles' states")
    gone.proc.send_signal(signal.SIGKILL)
    wait_for(lambda: online(gone.ids) == 0, 10, "the live Last Will to mark them offline")

    # Back through a link that publishes no birth message (which would replace
    # the will on the broker): the will stays retained.
    back = sims(2, "--lwt-topic-prefix", "", prefix=gone.ids[0][:-4])
    wait_for(lambda: online(gone.ids) == 2, 10, "fresh states to set the vehicles online")
    stop_process(back.proc)  # no more states: none can hide a wrong offline mark below
    retained = subscribe(gone.lwt_topic).wait(1)[0]
    assert retained.retain and json.loads(retained.payload)["status"] == "offline"

    stop_process(first["process"])
    second = bridges()
    wait_for(lambda: "Last Will" in second["log"].read_text(), 10, "the restarted bridge to get the will")
    assert online(gone.ids) == 2
    # (Not the log's count: other retained wills on a shared broker are replayed too.)
