"""Reliability under Celery-side faults (issue 13): a worker killed or stopped
mid-fan-out, Redis restarted mid-dispatch, two Beats started by mistake.

Real processes on servers of the test's own (tests/reliability/harness.py):
a redis-server and a mosquitto it may restart, the Celery worker, the MQTT
bridge, Beat and the fleet simulator. A ledger records every command and ack
on the wire; at the end every command must be final, none acked on the wire
lost in the database, nothing applied twice (RELIABILITY.md)."""

from __future__ import annotations

import secrets
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from dispatch.models import OPEN_COMMAND, Command, Dispatch
from dispatch.services import signal_acknowledged_kw
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from tests.conftest import metric_value, start_bridge, start_worker, stop_process, wait_for
from tests.reliability.harness import (
    Ledger,
    MosquittoServer,
    RedisServer,
    celery_client_on,
    kill_tree,
    process_tree,
    start_beat,
    start_simulator,
    worker_ready_by_log,
)
from v2g_project.queues import queue_names

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ACK_TIMEOUT_S = "3"


class FaultStack:
    """Servers of the test's own, the platform processes on them, and the ledger."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.redis = RedisServer(workdir)
        self.mosquitto = MosquittoServer(workdir)
        self.redis.start()
        self.mosquitto.start()
        self.procs: list = []
        self.ledger = Ledger(self.mosquitto.url).start()
        self.env = {
            "CELERY_BROKER_URL": self.redis.url,
            "K_MQTT__URL": self.mosquitto.url,
            "K_DISPATCH__ACK_TIMEOUT_SECONDS": ACK_TIMEOUT_S,
            "K_DISPATCH__DEFAULT_STRATEGY": "equal",
            "K_DISPATCH__SWEEP_GRACE_SECONDS": "1",
        }

    def worker(self, concurrency: int = 2, name: str = "worker") -> tuple:
        log = self.dir / f"{name}.log"
        since = log.stat().st_size if log.exists() else 0
        # Every queue (the stack's Redis is its own): dispatch, telemetry, planning, kpis, default.
        queues = ",".join(queue_names(settings.V2G.celery))
        proc = start_worker(log, queues, concurrency, **self.env)
        self.procs.append(proc)
        worker_ready_by_log(proc, log, since)
        return proc, log

    def bridge(self):
        self.procs.append(start_bridge(self.dir / "bridge.log", **self.env))
        return self.procs[-1]

    def beat(self, name: str = "beat"):
        self.procs.append(start_beat(self.dir / f"{name}.log", self.dir, **self.env))
        return self.procs[-1]

    def simulator(self, prefix: str, count: int, **options: str):
        proc = start_simulator(
            self.dir / f"simulator-{prefix.rstrip('-')}.log",
            mqtt_url=self.mosquitto.url,
            prefix=prefix,
            count=count,
            **options,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        self.ledger.stop()
        for proc in self.procs:
            if proc.poll() is None:
                kill_tree(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            stop_process(proc, 15)
        self.mosquitto.stop()
        self.redis.stop(signal.SIGKILL)


def acks_counted(client) -> float:
    """dispatch_acks_total of accepted and rejected acks, from every process."""
    return sum(metric_value(client, "dispatch_acks_total", outcome=o) for o in ("accepted", "rejected"))


def assert_counted_once(stack: FaultStack, summary: dict) -> None:
    """Every recorded ack counted once in dispatch_acks_total (the bridge counts
    just after its commit, hence the short wait)."""
    recorded = summary["acked_in_db"] + summary["rejected_in_db"]
    wait_for(
        lambda: acks_counted(stack.client) - stack.acks_before == recorded,
        10,
        f"dispatch_acks_total to count the {recorded} recorded acks "
        f"(now {acks_counted(stack.client) - stack.acks_before})",
        interval_s=0.2,
    )


@pytest.fixture
def faults(tmp_path, client):
    from django_celery_beat.models import PeriodicTask

    # Only the schedules a test declares (a flushed test database has none anyway).
    PeriodicTask.objects.all().delete()
    stack = FaultStack(tmp_path)
    stack.client, stack.acks_before = client, acks_counted(client)
    try:
        yield stack
    finally:
        stack.close()


def fleet_create(count: int) -> tuple[str, str]:
    """``count`` available V2G vehicles (fresh, plugged-in state): (fleet id, id prefix)."""
    prefix = f"rel{secrets.token_hex(2)}-"
    fleet = Fleet.objects.create(id=prefix.rstrip("-"), name="Reliability fleet")
    ids = [f"{prefix}{n:04d}" for n in range(count)]
    Vehicle.objects.bulk_create(
        [Vehicle(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11) for vid in ids]
    )
    now = timezone.now()
    VehicleState.objects.bulk_create(
        [
            VehicleState(vehicle_id=vid, soc=0.8, plugged_in=True, reported_at=now, received_at=now)
            for vid in ids
        ]
    )
    return fleet.id, prefix


def every(task: str, seconds: int, **fields) -> None:
    """A django-celery-beat schedule of ``task`` every ``seconds``."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    PeriodicTask.objects.create(name=f"test: {task}", task=task, interval=interval, **fields)


def submit(stack: FaultStack, fleet_id: str, count: int):
    from dispatch import services

    with celery_client_on(stack.redis.url):
        signal_, _dispatch = services.signal_submit(
            signal_type="FCR", power_kw=5.0 * count, duration_s=120, fleet_id=fleet_id
        )
    return signal_


def settled(signal_id) -> bool:
    rounds = Dispatch.objects.filter(signal_id=signal_id)
    return (
        rounds.exists()
        and not rounds.filter(finished_at__isnull=True).exists()
        and not Command.objects.filter(dispatch__signal_id=signal_id, status__in=OPEN_COMMAND).exists()
    )


# --- 1. a worker killed with SIGKILL mid fan-out -----------------------------------------


@pytest.mark.parametrize("victim", ["pool child", "whole worker"])
def test_worker_killed_mid_fanout_every_command_ends_final(faults, victim):
    """2,000 vehicles. "pool child": the process running the first publish batch
    is killed (an OOM kill): acks_late + reject_on_worker_lost put the batch
    back at once and the redelivered run re-sends what it had claimed.
    "whole worker": the worker and its children are killed (the container is
    killed): what it held stays unacked in Redis, and the sweep (Beat, every
    second here) finishes the round and re-dispatches its power."""
    count = 2000
    fleet_id, prefix = fleet_create(count)
    every("dispatch.sweep", 1)
    faults.bridge()
    faults.simulator(prefix, count)
    faults.beat()
    worker, log = faults.worker(concurrency=1)
    if victim == "pool child":
        children = [pid for pid in process_tree(worker.pid) if pid != worker.pid]
        assert len(children) == 1, "one pool process expected"
        faults.ledger.on_first_command = lambda: kill_tree(children[0])
    else:
        faults.ledger.on_first_command = lambda: kill_tree(worker.pid)
    signal_ = submit(faults, fleet_id, count)
    assert faults.ledger.first_command.wait(30), "no command published"
    if victim == "whole worker":
        worker.wait(10)
        faults.worker(concurrency=1, name="worker-2")
    wait_for(lambda: settled(signal_.id), 90, "every round of the signal to be final", interval_s=0.5)
    summary = faults.ledger.check([signal_.id], label=f"SIGKILL {victim}")
    assert_counted_once(faults, summary)
    assert summary["commands_in_db"] >= count
    # The power of the commands the dead worker never sent went to fallback,
    # those vehicles included: most of the signal is delivered all the same.
    assert signal_acknowledged_kw(signal_.id) >= 0.5 * signal_.power_kw, summary
    if victim == "pool child":
        # Usually killed while publishing a batch (WorkerLostError, the batch
        # redelivered); now and then between two tasks. Either way a new pool
        # process took over.
        text = log.read_text()
        assert "ForkPoolWorker-2" in text, "no pool process replaced the killed one"
        print(f"pool child killed while running a task: {'WorkerLostError' in text}")


# --- 2. the worker stopped gracefully (SIGTERM) mid fan-out, then restarted -----------------


def test_worker_warm_shutdown_mid_fanout_then_restart(faults):
    """SIGTERM is Celery's warm shutdown: the running task finishes, what the
    worker had reserved goes back to Redis (with celery.prefetch_multiplier 1 and
    acks_late, nothing beyond the running task), the rest of the fan-out (the
    other publish batch, the collector) waits in Redis, and the restarted worker
    carries on with it."""
    count = 1000  # two publish batches
    fleet_id, prefix = fleet_create(count)
    every("dispatch.sweep", 1)
    faults.bridge()
    faults.simulator(prefix, count)
    faults.beat()
    worker, log = faults.worker(concurrency=1)
    faults.ledger.on_first_command = lambda: worker.send_signal(signal.SIGTERM)
    signal_ = submit(faults, fleet_id, count)
    assert faults.ledger.first_command.wait(30), "no command published"
    assert worker.wait(30) == 0, "the warm shutdown did not end cleanly"
    # The stopped worker left the fan-out unfinished (the other batch and/or the
    # collector wait in Redis): the restart has real work to do.
    published = Command.objects.filter(dispatch__signal=signal_, published_at__isnull=False).count()
    assert not settled(signal_.id), f"settled before the restart:\n{log.read_text()[-2000:]}"
    faults.worker(concurrency=1, name="worker-2")
    wait_for(lambda: settled(signal_.id), 60, "every round of the signal to be final", interval_s=0.5)
    summary = faults.ledger.check([signal_.id], label=f"SIGTERM ({published} published before the stop)")
    assert_counted_once(faults, summary)
    assert signal_acknowledged_kw(signal_.id) >= 0.5 * signal_.power_kw, summary


# --- 3. Redis restarted mid-dispatch -----------------------------------------------------


def test_redis_restart_mid_dispatch_workers_resume(faults):
    """The broker goes away for a second in the middle of a fan-out: the worker,
    Beat and the test's own client reconnect, the dispatch ends, and a signal
    sent after the restart is dispatched too (nothing stuck)."""
    count = 1000
    fleet_id, prefix = fleet_create(count)
    every("dispatch.sweep", 1)
    faults.bridge()
    faults.simulator(prefix, count)
    beat = faults.beat()
    worker, log = faults.worker(concurrency=2)
    signal_ = submit(faults, fleet_id, count)
    assert faults.ledger.first_command.wait(30), "no command published"
    faults.redis.restart(down_s=1.0)
    wait_for(lambda: settled(signal_.id), 60, "every round of the signal to be final", interval_s=0.5)
    # Consuming again: a new signal (fresh vehicles' commitments expire with the first one's,
    # so a second fleet takes it).
    fleet2, prefix2 = fleet_create(200)
    faults.simulator(prefix2, 200)
    after = submit(faults, fleet2, 200)
    wait_for(lambda: settled(after.id), 60, "the signal sent after the restart to be final", interval_s=0.5)
    summary = faults.ledger.check([signal_.id, after.id], label="Redis restart")
    assert_counted_once(faults, summary)
    assert signal_acknowledged_kw(after.id) >= 0.5 * after.power_kw, summary
    assert worker.poll() is None, f"the worker died: {log.read_text()[-3000:]}"
    assert beat.poll() is None, "Beat died"


# --- 4. two Beats started by mistake ----------------------------------------------------


def test_two_beats_periodic_jobs_stay_idempotent(faults):
    """Two `celery beat` processes on one Redis and one database send every
    periodic job twice: the sweep (re-enqueuing a lost allocation), the
    telemetry pull round, the D+1 plan and the KPI recomputation. Each takes
    effect once: one allocation, at most one pull round per Beat slot, one
    plan per set of inputs, KPIs equal to a single recomputation; no task fails."""
    from dispatch.models import Dispatch, FlexibilitySignal
    from kpis import services as kpi_services
    from kpis.models import VehicleDayKpi
    from scheduler.models import Plan
    from telemetry.models import TelemetryPoll

    count, interval_s = 20, 2
    fleet_id, prefix = fleet_create(count)
    faults.env.update(K_TELEMETRY__MODE="pull", K_TELEMETRY__INTERVAL_SECONDS=str(interval_s),
                      K_TELEMETRY__TIMEOUT_SECONDS="1")  # fmt: skip
    every("dispatch.sweep", 1)
    every("telemetry.poll", interval_s)
    every("scheduler.plan_next_day", interval_s)
    every("kpis.recompute_recent", interval_s, kwargs='{"days_back": 0}')
    # A signal whose allocation task was lost (its worker died): the sweeps must re-enqueue it.
    now = timezone.now()
    lost = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=5.0 * count, start_at=now, duration_s=300,
        valid_until=now + timedelta(seconds=300), source="api", fleet_id=fleet_id,
    )  # fmt: skip
    Dispatch.objects.create(signal=lost, round=0, target_kw=lost.power_kw)
    Dispatch.objects.filter(signal=lost).update(created_at=now - timedelta(seconds=60))
    faults.bridge()
    faults.simulator(prefix, count)
    _worker, worker_log = faults.worker(concurrency=2)
    beats = [faults.beat("beat-1"), faults.beat("beat-2")]
    started = time.monotonic()

    def sends(name: str) -> list[int]:
        return [
            (faults.dir / f"beat-{n}.log").read_text().count(f"Sending due task test: {name}") for n in (1, 2)
        ]

    # Both Beats have sent every job at least twice, and the lost signal is settled.
    wait_for(
        lambda: all(min(sends(job)) >= 2 for job in ("telemetry.poll", "scheduler.plan_next_day",
                                                     "kpis.recompute_recent", "dispatch.sweep"))
        and settled(lost.id),
        60, "both Beats to send every job twice and the lost signal to settle", interval_s=0.5,
    )  # fmt: skip
    for beat in beats:
        stop_process(beat)
    elapsed_s = time.monotonic() - started
    wait_for(
        lambda: not TelemetryPoll.objects.filter(status="collecting").exists(), 20, "the last pull round"
    )

    summary = faults.ledger.check([lost.id], label="two Beats")
    assert_counted_once(faults, summary)
    round0 = Dispatch.objects.get(signal=lost, round=0)
    assert round0.commands.count() == count  # allocated once though re-enqueued by every sweep
    polls = TelemetryPoll.objects.filter(manual=False)
    slots = list(polls.values_list("round_at", flat=True))
    assert len(slots) == len(set(slots))
    assert len(slots) <= elapsed_s / interval_s + 2, (len(slots), elapsed_s)
    assert sum(sends("telemetry.poll")) > len(slots)  # duplicates were sent, and refused
    plans = list(Plan.objects.values_list("day", "inputs_digest"))
    assert plans and len(plans) == len(set(plans)), plans
    before = dict(VehicleDayKpi.objects.values_list("vehicle_id", "injected_kwh"))
    kpi_services.kpis_compute_recent(days_back=0)  # once more, alone: nothing was counted twice
    after = dict(VehicleDayKpi.objects.values_list("vehicle_id", "injected_kwh"))
    assert after and after == before
    failures = [line for line in worker_log.read_text().splitlines() if "raised unexpected" in line]
    assert not failures, failures[:3]
    print(
        f"two Beats: {elapsed_s:.1f} s, pull rounds sent {sends('telemetry.poll')} -> {len(slots)} recorded; "
        f"plans sent {sends('scheduler.plan_next_day')} -> {len(plans)}; sweeps {sends('dispatch.sweep')}; "
        f"{summary['commands_in_db']} commands"
    )
