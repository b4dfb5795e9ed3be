"""Issue 13, MQTT side: faults of the broker, the bridge, the database and the
vehicles' payloads, on the real stack (a private Mosquitto that the tests
restart, a real Celery worker, the real bridge process, the simulator, the
test's PostgreSQL database), checked Jepsen-style against a ledger.

The ledger is the simulator's own (``--ledger``): every command a vehicle
received and every ack it sent. At the end of each test every command of
every round must be final (acked, rejected, timed out or failed), no ack a
vehicle sent may be lost (its command is acked or rejected as the vehicle
said, or, if it came after the deadline, kept as a late ack), no command may
be acknowledged that its vehicle did not acknowledge, and nothing may be
counted twice (one dispatch-log record per command, ack counters equal to
the acks applied). RELIABILITY.md says what each test proves.
"""

from __future__ import annotations

import json
import secrets
import signal as signals
import subprocess
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg import sql

from dispatch.models import (
    Command,
    CommandStatus,
    Dispatch,
    DispatchLogEntry,
    FlexibilitySignal,
)
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from tests.conftest import (
    PrivateBroker,
    metric_value,
    start_bridge,
    start_worker,
    stop_process,
    subprocess_env,
    wait_for,
    worker_ready,
)
from tests.simulator.test_simulator import SimProcess
from v2g_project import mqtt
from v2g_project.config import MqttConfig

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ACK_TIMEOUT_S = 15  # rides out a 3 s fault plus a slow bridge start on a loaded CI machine
VEHICLES = 150
FINAL = (CommandStatus.ACKED, CommandStatus.REJECTED, CommandStatus.TIMED_OUT, CommandStatus.FAILED)


@dataclass
class Stack:
    broker: PrivateBroker
    queue: str
    env: dict[str, str]
    workdir: Path
    bridge: subprocess.Popen | None = None
    bridges: int = 0

    def bridge_log(self) -> str:
        """What every bridge of the module logged, in order."""
        return "".join((self.workdir / f"bridge-{n}.log").read_text() for n in range(self.bridges))

    def bridge_kill(self) -> None:
        self.bridge.send_signal(signals.SIGKILL)
        self.bridge.wait(10)

    def bridge_start(self) -> None:
        """A bridge under the module's client id: a restarted one takes over the broker session."""
        self.bridge = start_bridge(self.workdir / f"bridge-{self.bridges}.log", **self.env)
        self.bridges += 1


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory):
    """A private broker, a worker on a queue of its own and a bridge, all pointed
    at that broker and the test database; fallback off (each round is one
    set of commands to account for), a 15 s ack deadline."""
    workdir = tmp_path_factory.mktemp("transport-faults")
    broker = PrivateBroker(workdir)
    broker.start()
    queue = f"relmqtt-{secrets.token_hex(3)}"
    env = broker.env(
        K_CELERY__DEFAULT_QUEUE=queue,
        K_DISPATCH__ACK_TIMEOUT_SECONDS=str(ACK_TIMEOUT_S),
        K_DISPATCH__FALLBACK="noop",
        K_MQTT__BRIDGE_CLIENT_ID=f"v2g-test-bridge-{secrets.token_hex(4)}",
    )
    worker = start_worker(workdir / "worker.log", queue, concurrency=2, **env)
    stack = Stack(broker, queue, env, workdir)
    try:
        worker_ready(queue, workdir / "worker.log")
        stack.bridge_start()
        yield stack
    finally:
        stop_process(worker)
        if stack.bridge is not None:
            stop_process(stack.bridge)
        broker.stop()  # and its sessions with it


class Ledger:
    """The simulator's ledger, read back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.endswith("}")]

    def acks(self) -> list[dict]:
        return [r for r in self.records() if r["event"] == "ack"]


@dataclass
class Run:
    prefix: str
    fleets: list[Fleet]
    sim: SimProcess
    ledger: Ledger
    stack: Stack

    def signal(self, fleet: Fleet, power_kw: float) -> FlexibilitySignal:
        from dispatch.tasks import dispatch_allocate_task

        now = timezone.now()
        signal = FlexibilitySignal.objects.create(
            signal_type="FCR", power_kw=power_kw, start_at=now, duration_s=600,
            valid_until=now + timedelta(minutes=10), fleet=fleet,
        )  # fmt: skip
        dispatch = Dispatch.objects.create(signal=signal, target_kw=power_kw)
        dispatch_allocate_task.apply_async(args=[str(dispatch.id)], queue=self.stack.queue)
        return signal

    def settled(self, signal: FlexibilitySignal, timeout_s: float = 60) -> list[Dispatch]:
        def done():
            rounds = list(Dispatch.objects.filter(signal=signal).order_by("round"))
            return rounds if rounds and all(r.is_final for r in rounds) else None

        return wait_for(done, timeout_s, f"every round of signal {signal.id} to be final")

    def acks_at_least(self, count: int, timeout_s: float = 30) -> None:
        wait_for(lambda: len(self.ledger.acks()) >= count, timeout_s, f"{count} acks in the ledger")


@pytest.fixture
def fleet_run(stack, tmp_path):
    """fleet_run(*sim options) -> Run: two fleets of VEHICLES registered (plugged
    in, fresh state) and one simulator answering for both, with a ledger."""
    started: list[SimProcess] = []

    def start(*sim_args: str) -> Run:
        prefix = f"r{secrets.token_hex(3)}-"
        fleets = [Fleet.objects.create(id=f"{prefix}f{k}", name=f"faults {k}") for k in range(2)]
        now = timezone.now()
        vehicles = [
            Vehicle(
                id=f"{prefix}{n:04d}",
                fleet=fleets[n // VEHICLES],
                battery_kwh=60,
                max_charge_kw=11,
                max_discharge_kw=10,
            )
            for n in range(2 * VEHICLES)
        ]
        Vehicle.objects.bulk_create(vehicles)
        VehicleState.objects.bulk_create(
            VehicleState(vehicle=v, soc=0.8, plugged_in=True, reported_at=now, received_at=now)
            for v in vehicles
        )
        ledger = Ledger(tmp_path / "ledger.jsonl")
        argv = [
            "--url", stack.broker.url, "--prefix", prefix, "--count", str(2 * VEHICLES), "--seed", "13",
            "--profiles", "always=1", "--telemetry-interval-s", "0", "--status-interval-s", "0",
            "--lwt-topic-prefix", "", "--ledger", str(ledger.path), *sim_args,
        ]  # fmt: skip
        sim = SimProcess(argv, subprocess_env())
        started.append(sim)
        sim.wait_line(lambda line: line.startswith("sim ready"), 30)
        return Run(prefix, fleets, sim, ledger, stack)

    yield start
    for sim in started:
        sim.stop()


def ack_counts(client) -> dict[str, float]:
    return {
        outcome: metric_value(client, "dispatch_acks_total", outcome=outcome)
        for outcome in ("accepted", "rejected", "duplicate", "late", "unknown", "mismatch", "malformed")
    }


def ledger_check(
    name: str, run: Run, signals_: list[FlexibilitySignal], client, acks_before: dict, *, killed: bool = False
) -> dict:
    """Compare the vehicles' ledger with the database; print the summary; assert
    every command final, lost = 0, forged = 0, duplicates applied = 0.

    ``killed``: a bridge was SIGKILLed. Its ack counters are incremented just
    after its transaction commits, so a kill between the two leaves acks
    recorded but not counted (the broker then redelivers them, counted as
    duplicates): counters may then fall short, never count twice."""
    records = run.ledger.records()
    sent: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record["event"] == "ack":
            sent[record["command_id"]].add(record["status"])
    received = {r["command_id"] for r in records if r["event"] == "command"}
    redelivered = sum(1 for r in records if r["event"] == "command" and r["duplicate"])
    commands = {str(c.id): c for c in Command.objects.filter(dispatch__signal__in=signals_)}
    by_status = Counter(c.status for c in commands.values())
    not_final = [cid for cid, c in commands.items() if c.status not in FINAL]

    def recorded(command: Command, statuses: set[str]) -> bool:
        if command.status == CommandStatus.ACKED:
            return "accepted" in statuses
        if command.status == CommandStatus.REJECTED:
            return "rejected" in statuses
        return command.late_ack_at is not None  # came after the deadline: kept, not counted

    lost = [
        cid for cid, statuses in sent.items() if cid not in commands or not recorded(commands[cid], statuses)
    ]
    # Acknowledged in the database although the vehicle never said so (a forged ack).
    forged = [
        cid for cid, c in commands.items()
        if c.status in (CommandStatus.ACKED, CommandStatus.REJECTED) and cid not in sent
    ]  # fmt: skip
    logged = Counter(
        str(cid)
        for cid in DispatchLogEntry.objects.filter(command_id__in=commands).values_list(
            "command_id", flat=True
        )
    )
    after = ack_counts(client)
    applied = (after["accepted"] - acks_before["accepted"]) + (after["rejected"] - acks_before["rejected"])
    answered = by_status[CommandStatus.ACKED] + by_status[CommandStatus.REJECTED]
    duplicates_applied = sum(n - 1 for n in logged.values() if n > 1) + max(0, int(applied - answered))
    late = sum(1 for c in commands.values() if c.late_ack_at is not None)
    summary = {
        "commands": len(commands), "received_by_vehicles": len(received), "redelivered": redelivered,
        "acks_sent": len(sent), "acked": by_status[CommandStatus.ACKED],
        "rejected": by_status[CommandStatus.REJECTED], "timed_out": by_status[CommandStatus.TIMED_OUT],
        "failed": by_status[CommandStatus.FAILED], "late_acks_kept": late, "not_final": len(not_final),
        "lost": len(lost), "forged": len(forged), "duplicates_applied": duplicates_applied,
        "acks_counted": int(applied), "duplicates_refused": int(after["duplicate"] - acks_before["duplicate"]),
    }  # fmt: skip
    print(f"ledger {name}: " + " ".join(f"{k}={v}" for k, v in summary.items()))
    assert commands, "no command was sent"
    assert not not_final, f"{len(not_final)} command(s) not final, e.g. {not_final[:3]}"
    assert not lost, f"{len(lost)} ack(s) sent by vehicles are not recorded, e.g. {lost[:3]}"
    assert not forged, f"{len(forged)} command(s) acknowledged without their vehicle's ack: {forged[:3]}"
    assert duplicates_applied == 0
    assert set(logged) == set(commands), "every command of a final round has exactly one dispatch-log record"
    for dispatch in Dispatch.objects.filter(signal__in=signals_):
        assert dispatch.is_final
        acked_kw = sum(
            c.allocated_kw
            for c in commands.values()
            if c.dispatch_id == dispatch.id and c.status == CommandStatus.ACKED
        )
        assert dispatch.acknowledged_kw == pytest.approx(acked_kw, abs=0.01)
    assert applied <= answered if killed else applied == answered
    return summary


# --- 1. the broker restarted mid-dispatch ------------------------------------------------


def test_a_broker_restart_mid_dispatch_loses_no_ack(stack, fleet_run, client):
    """Mosquitto stops (SIGTERM, sessions saved) and starts again while acks are
    coming: the worker's publisher, the simulator and the bridge reconnect and
    resubscribe by themselves; the acks queued for the bridge's persistent
    session, and those the simulator sends once reconnected, are all recorded;
    a dispatch after the restart goes through whole."""
    before = ack_counts(client)
    run = fleet_run("--ack-latency-ms-min", "100", "--ack-latency-ms-max", "3000")
    first = run.signal(run.fleets[0], 5.0 * VEHICLES)
    run.acks_at_least(VEHICLES // 4)
    connects, new_sessions = (
        stack.bridge_log().count("bridge connected"),
        stack.bridge_log().count("new broker session"),
    )
    stack.broker.restart()
    wait_for(lambda: stack.bridge_log().count("bridge connected") > connects, 30, "the bridge to resubscribe")
    # The broker saved the bridge's session (persistence) and gave it back after the restart.
    assert stack.bridge_log().count("new broker session") == new_sessions
    run.settled(first)
    second = run.signal(run.fleets[1], 5.0 * VEHICLES)
    run.settled(second)
    summary = ledger_check("broker restart", run, [first, second], client, before)
    # Recovered by itself: after the restart every command reached its vehicle and was answered.
    assert (
        Command.objects.filter(
            dispatch__signal=second, status__in=(CommandStatus.TIMED_OUT, CommandStatus.FAILED)
        ).count()
        == 0
    )
    assert summary["acks_sent"] >= VEHICLES


# --- 2. the bridge killed while acks arrive ------------------------------------------------


def test_a_killed_bridge_loses_no_ack(stack, fleet_run, client):
    """SIGKILL of the bridge with acks arriving: what it had received but not
    recorded was never acknowledged to the broker, and what came while it was
    down was queued in its persistent session; the restarted bridge, under the
    same client id, gets both (redeliveries are recorded once)."""
    before = ack_counts(client)
    run = fleet_run("--ack-latency-ms-min", "0", "--ack-latency-ms-max", "4000")
    signal = run.signal(run.fleets[0], 5.0 * VEHICLES)
    run.acks_at_least(VEHICLES // 5)
    new_sessions = stack.bridge_log().count("new broker session")
    stack.bridge_kill()
    down_at = len(run.ledger.acks())
    run.acks_at_least(down_at + VEHICLES // 5)  # acks sent while no bridge runs
    stack.bridge_start()
    run.settled(signal)
    summary = ledger_check("bridge killed", run, [signal], client, before, killed=True)
    # The restarted bridge found its session kept by the broker.
    assert stack.bridge_log().count("new broker session") == new_sessions
    assert summary["acked"] + summary["rejected"] == summary["acks_sent"]  # none came late


# --- 3. the database unreachable for a few seconds ------------------------------------


def database_outage(seconds: float) -> None:
    """Refuse new connections to the test database and cut every existing one
    but this process's own, for ``seconds``; the shared server keeps running."""
    db = settings.DATABASES["default"]
    name = db["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own = cursor.fetchone()[0]
    params = {"host": db.get("HOST") or "127.0.0.1", "port": db.get("PORT") or 5432, "user": db.get("USER")}
    if db.get("PASSWORD"):
        params["password"] = db["PASSWORD"]
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        quoted = sql.Identifier(name)
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(quoted))
        try:
            deadline = timezone.now() + timedelta(seconds=seconds)
            cut = 0
            while timezone.now() < deadline:
                cut += admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> %s",
                    [name, own],
                ).fetchone()[0]
                admin.execute("SELECT pg_sleep(0.2)")
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(quoted))
    assert cut >= 1, "the bridge's connection (at least) was cut"


def test_a_database_outage_loses_no_ack(stack, fleet_run, client):
    """The test database refuses connections for 3 s and every open one is cut,
    with acks arriving: the bridge retries its batch without acknowledging it
    (the broker holds the rest), the worker's collector retries, and when the
    database is back every ack is recorded and every round finalised."""
    before = ack_counts(client)
    run = fleet_run("--ack-latency-ms-min", "0", "--ack-latency-ms-max", "4000")
    signal = run.signal(run.fleets[0], 5.0 * VEHICLES)
    run.acks_at_least(VEHICLES // 5)
    database_outage(3.0)
    run.settled(signal)
    summary = ledger_check("database outage", run, [signal], client, before)
    assert "database error on a batch" in stack.bridge_log()  # both really met the outage
    assert "not currently accepting connections" in (stack.workdir / "worker.log").read_text()
    assert summary["acked"] + summary["rejected"] == summary["acks_sent"]


# --- 4. bad, forged, duplicate and late acks ------------------------------------------------


def test_bad_forged_duplicate_and_late_acks_are_refused_counted_and_change_nothing(stack, fleet_run, client):
    """During a dispatch, a flood of malformed, oversized and deeply nested
    payloads, acks of unknown commands, acks naming another vehicle than their
    topic, and forged rejections of vehicle A's commands sent by vehicle B;
    afterwards every ack replayed, and acks for the commands that timed out.
    Each is refused with a logged reason and counted; the valid acks sent
    during the flood are all recorded; nothing is counted twice."""
    before = ack_counts(client)
    refused_before = {
        reason: metric_value(client, "mqtt_bridge_rejected_total", route="ack", reason=reason)
        for reason in ("oversized", "not_json", "not_utf8", "too_deep", "not_object")
    }
    run = fleet_run("--ack-latency-ms-min", "500", "--ack-latency-ms-max", "2500", "--drop-rate", "0.1")
    cfg = MqttConfig(url=stack.broker.url)
    attacker = mqtt.client_create(cfg, "test-attacker", will=False)
    seen: list[dict] = []
    attacker.on_message = lambda _c, _u, m: seen.append(json.loads(m.payload))
    mqtt.connect(attacker, cfg)
    try:
        granted = []
        attacker.on_subscribe = lambda *_: granted.append(True)
        attacker.subscribe("vehicle/+/command", qos=1)
        wait_for(lambda: granted, 5, "the SUBACK")
        signal = run.signal(run.fleets[0], 5.0 * VEHICLES)
        wait_for(lambda: len(seen) >= VEHICLES, 20, "the commands")

        def publish(vehicle_id: str, payload: bytes | str):
            return attacker.publish(f"vehicle/{vehicle_id}/ack", payload, qos=1)

        vids = [f"{run.prefix}{n:04d}" for n in range(VEHICLES)]
        flood = {
            # 5,000 digits: json.loads raised a bare ValueError that ended the bridge's handler thread.
            "not_json": [b"{not json"] * 150 + [b'{"command_id": ' + b"7" * 5000 + b"}"] * 50,
            "not_utf8": [b"\xff\xfe"] * 100,
            "not_object": [b"[1, 2, 3]"] * 100,
            "oversized": [b"x" * 70_000] * 10,
            "too_deep": [b"[" * 20_000 + b"]" * 20_000] * 10,
        }
        infos = []
        # Forged: vehicle B "rejects" vehicle A's command, before A's own ack (>= 500 ms).
        for k, command in enumerate(seen):
            other = vids[(vids.index(command["vehicle_id"]) + 1) % VEHICLES]
            forged = {"command_id": command["command_id"], "vehicle_id": other, "status": "rejected"}
            infos.append(publish(other, json.dumps(forged)))
            if k % 2 == 0:  # and A's command named on B's topic: the topic's vehicle wins
                infos.append(publish(other, json.dumps({**forged, "vehicle_id": command["vehicle_id"]})))
        for n in range(200):
            infos.append(publish(vids[n % VEHICLES], json.dumps(
                {"command_id": str(uuid.uuid4()), "vehicle_id": vids[n % VEHICLES], "status": "accepted"})))  # fmt: skip
            infos.append(publish(vids[n % VEHICLES], json.dumps({"status": "accepted"})))  # no command_id
        for payloads in flood.values():
            for n, payload in enumerate(payloads):
                infos.append(publish(vids[n % VEHICLES], payload))
        for info in infos:
            info.wait_for_publish(10)
        run.settled(signal)

        # Afterwards: every ack a vehicle sent, replayed; and acks for what timed out.
        replay = run.ledger.acks()
        dropped = [c for c in Command.objects.filter(dispatch__signal=signal, status=CommandStatus.TIMED_OUT)]
        assert dropped, "the drop rate left some commands unanswered"
        infos = [
            publish(r["vehicle_id"], json.dumps({k: r[k] for k in ("command_id", "vehicle_id", "status")}))
            for r in replay
        ]
        infos += [
            publish(
                c.vehicle_id,
                json.dumps({"command_id": str(c.id), "vehicle_id": c.vehicle_id, "status": "accepted"}),
            )
            for c in dropped
        ]
        for info in infos:
            info.wait_for_publish(10)
        wait_for(
            lambda: (
                Command.objects.filter(dispatch__signal=signal, late_ack_at__isnull=False).count()
                == len(dropped)
            ),
            20,
            "the late acks to be noted",
        )
        wait_for(
            lambda: ack_counts(client)["duplicate"] - before["duplicate"] >= len(replay), 20, "the replays"
        )
    finally:
        mqtt.disconnect(attacker)

    summary = ledger_check("bad acks", run, [signal], client, before)
    assert summary["timed_out"] == len(dropped) == summary["late_acks_kept"]
    after = ack_counts(client)
    delta = {k: after[k] - before[k] for k in after}
    forged_count = len(seen)
    assert delta["mismatch"] == forged_count
    assert delta["malformed"] == (forged_count + 1) // 2 + 200  # topic/vehicle disagreement + no command_id
    assert delta["unknown"] == 200
    assert delta["duplicate"] == len(replay)
    assert delta["late"] == len(dropped)
    for reason, payloads in flood.items():
        refused = metric_value(client, "mqtt_bridge_rejected_total", route="ack", reason=reason)
        assert refused - refused_before[reason] == len(payloads), reason
    log = stack.bridge_log()
    for reason in ("payload is not JSON", "nests deeper than", "exceeds 65536", "not its vehicle",
                   "ack for unknown command", "does not match the topic", "command_id is missing"):  # fmt: skip
        assert reason in log, reason
    assert stack.bridge.poll() is None
