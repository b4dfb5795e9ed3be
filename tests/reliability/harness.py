"""Fault-injection harness of tests/reliability: servers a test may kill, and
the wire ledger.

Each test gets its own redis-server and mosquitto (generated configuration,
free port, temporary directory) so that it can stop, kill and restart them
without touching the shared servers other tests use. The platform processes
(worker, bridge, Beat, simulator) are the real ones, started with the helpers
of tests/conftest.py and pointed at these servers by environment variables.

The ledger is a paho client of the test process, subscribed (QoS 1, not
shared) to every command and every ack: what went over the wire, to be
compared with what the database recorded (Jepsen style: lost = 0,
duplicates applied = 0).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.conftest import ROOT, free_port, wait_for


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (from /proc, children first)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[ppid].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found[::-1]


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    for each in process_tree(pid):
        with suppress(ProcessLookupError):
            os.kill(each, sig)


class RedisServer:
    """A redis-server of the test's own, configured as docker-compose's broker
    (append-only file fsynced every second, noeviction): a restart keeps the
    queued tasks, as in production."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        args += ["--save", "", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _port_open(self.port), 10, "redis-server to listen")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (the append-only file is flushed); SIGKILL: a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)  # the outage itself, not a synchronisation
        self.start()


class MosquittoServer:
    """A mosquitto of the test's own, from deploy/mosquitto/mosquitto.conf (its
    queue and in-flight limits) on a free port, persistence off."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.conf = workdir / "mosquitto.conf"
        lines = [
            line
            for line in (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()
            if not line.startswith(("listener", "persistence", "log_dest"))
        ]
        lines += [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest none"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_for(lambda: _port_open(self.port), 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_simulator(
    log_path: Path, *, mqtt_url: str, prefix: str, count: int, **options: str
) -> subprocess.Popen:
    """The fleet simulator (one process, one MQTT client for all its vehicles),
    acking every command it can; returns once it is subscribed."""
    from tests.conftest import stop_process, subprocess_env

    args = [sys.executable, "-m", "simulator", "--count", str(count), "--prefix", prefix, "--url", mqtt_url]
    args += ["--seed", "13", "--profiles", "always=1", "--v2g-share", "1", "--min-soc", "0.1"]
    args += ["--telemetry-interval-s", "0", "--status-interval-s", "0", "--lwt-topic-prefix", ""]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", value]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "sim ready" in log_path.read_text() or proc.poll() is not None, 30, "the simulator")
    except AssertionError:
        stop_process(proc)
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"the simulator exited:\n{log_path.read_text()[-3000:]}")
    return proc


def start_beat(log_path: Path, workdir: Path, **env: str) -> subprocess.Popen:
    """A real `celery beat` (django-celery-beat's scheduler) on the test database."""
    from django.conf import settings

    from tests.conftest import TEST_PROCESS_ENV, database_url, subprocess_env

    environment = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        K_CELERY__BEAT_HEARTBEAT_FILE=str(workdir / f"beat-{secrets.token_hex(3)}.alive"),
        **{**TEST_PROCESS_ENV, **env},
    )
    args = [sys.executable, "-m", "celery", "-A", "v2g_project", "beat", "--loglevel", "INFO"]
    args += ["--schedule", str(workdir / f"beat-{secrets.token_hex(3)}.db")]
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)


def worker_ready_by_log(
    proc: subprocess.Popen, log_path: Path, since: int = 0, timeout_s: float = 60
) -> None:
    """Wait for the worker's "ready." line (written after ``since`` bytes of its log):
    the test process's Celery client stays on the shared broker, so no ping."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        return " ready." in log_path.read_text()[since:]

    wait_for(ready, timeout_s, "the worker to be ready", interval_s=0.1)


@contextmanager
def celery_client_on(broker_url: str):
    """Point this process's Celery client (what ``.delay`` publishes through,
    e.g. the allocation enqueued by ``signal_submit``) at ``broker_url`` for the
    block, and back to the configured broker afterwards."""
    from v2g_project.celery import app

    def forget_connections() -> None:
        # The app's connection and producer pools are bound to the previous broker
        # (not closed: kombu keeps producer pools by broker URL and would hand a closed one back).
        app._pool = None
        app.amqp._producer_pool = None

    # broker_write_url: broker_url is shadowed by Django's CELERY_BROKER_URL.
    before = app.conf.broker_write_url
    forget_connections()
    app.conf.broker_write_url = broker_url
    try:
        yield app
    finally:
        forget_connections()
        app.conf.broker_write_url = before


class Ledger:
    """Every command published and every ack sent, as seen by a subscriber of
    its own (QoS 1, non-shared) on the vehicles' broker."""

    def __init__(
        self, mqtt_url: str, command_topic: str = "vehicle/+/command", ack_topic: str = "vehicle/+/ack"
    ):
        from v2g_project import mqtt
        from v2g_project.config import MqttConfig

        self.commands: Counter[str] = Counter()  # command id -> times seen on the wire
        self.acks: dict[str, list[str]] = defaultdict(list)  # command id -> statuses sent by the vehicle
        self.first_command = threading.Event()
        # Called once, in paho's thread, at the first command: a fault injected
        # there lands in the middle of the fan-out, not after it.
        self.on_first_command: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._topics = (command_topic, ack_topic)
        self._cfg = MqttConfig(url=mqtt_url)
        self._client = mqtt.client_create(self._cfg, "ledger", will=False)
        self._client.message_callback_add(command_topic, self._on_command)
        self._client.message_callback_add(ack_topic, self._on_ack)
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_connect(self, client, _userdata, _flags, _reason, _properties=None) -> None:
        client.subscribe([(self._topics[0], 1), (self._topics[1], 1)])

    def start(self) -> Ledger:
        from v2g_project import mqtt

        mqtt.connect(self._client, self._cfg)
        assert self._subscribed.wait(10), "the ledger's subscriptions were not confirmed"
        return self

    def stop(self) -> None:
        from v2g_project import mqtt

        mqtt.disconnect(self._client)

    def _on_command(self, _client, _userdata, message) -> None:
        command_id = json.loads(message.payload)["command_id"]
        with self._lock:
            self.commands[command_id] += 1
            first = not self.first_command.is_set()
            self.first_command.set()
        if first and self.on_first_command is not None:
            self.on_first_command()

    def _on_ack(self, _client, _userdata, message) -> None:
        ack = json.loads(message.payload)
        with self._lock:
            self.acks[ack["command_id"]].append(ack["status"])

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.commands), len(self.acks)

    def check(self, signal_ids: Iterable, *, label: str) -> dict:
        """Compare the wire with the database for these signals; print and return
        the summary. Every command must be final; every command a vehicle acked
        must be recorded with that outcome (or, if the ack came after its round
        had timed out, as a late ack); nothing applied twice."""
        from django.db.models import Count

        from dispatch.models import Command, CommandStatus, Dispatch, DispatchLogEntry

        signal_ids = list(signal_ids)
        final = {CommandStatus.ACKED, CommandStatus.REJECTED, CommandStatus.TIMED_OUT, CommandStatus.FAILED}
        rows = {
            str(cid): (status, late)
            for cid, status, late in Command.objects.filter(dispatch__signal_id__in=signal_ids).values_list(
                "id", "status", "late_ack_at"
            )
        }
        with self._lock:
            wire_commands, wire_acks = dict(self.commands), {k: list(v) for k, v in self.acks.items()}
        not_final = [cid for cid, (status, _late) in rows.items() if status not in final]
        lost = []
        for cid, statuses in wire_acks.items():
            if cid not in rows:
                continue  # another test's vehicle on this broker: none here, but not ours to judge
            status, late = rows[cid]
            expected = CommandStatus.ACKED if statuses[0] == "accepted" else CommandStatus.REJECTED
            if status != expected and not (
                status in (CommandStatus.TIMED_OUT, CommandStatus.FAILED) and late
            ):
                lost.append((cid, statuses[0], status))
        unknown_on_wire = [cid for cid in wire_commands if cid not in rows]
        log_dupes = (
            DispatchLogEntry.objects.filter(signal_id__in=signal_ids)
            .values("command_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
        vehicle_round_dupes = (
            Command.objects.filter(dispatch__signal_id__in=signal_ids)
            .values("dispatch_id", "vehicle_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
        logged = DispatchLogEntry.objects.filter(signal_id__in=signal_ids).count()
        dispatches = Dispatch.objects.filter(signal_id__in=signal_ids)
        from dispatch.services import signal_acknowledged_kw

        summary = {
            "label": label,
            "acknowledged_kw": round(sum(signal_acknowledged_kw(sid) for sid in signal_ids), 1),
            "commands_in_db": len(rows),
            "commands_on_wire": len(wire_commands),
            "commands_sent_twice": sum(1 for n in wire_commands.values() if n > 1),
            "acks_on_wire": len(wire_acks),
            "acks_sent_twice": sum(1 for v in wire_acks.values() if len(v) > 1),
            "acked_in_db": sum(1 for s, _ in rows.values() if s == CommandStatus.ACKED),
            "rejected_in_db": sum(1 for s, _ in rows.values() if s == CommandStatus.REJECTED),
            "timed_out_in_db": sum(1 for s, _ in rows.values() if s == CommandStatus.TIMED_OUT),
            "failed_in_db": sum(1 for s, _ in rows.values() if s == CommandStatus.FAILED),
            "late_acks_in_db": sum(1 for _s, late in rows.values() if late),
            "rounds": dispatches.count(),
            "not_final": len(not_final),
            "lost": len(lost),
            "duplicates_applied": log_dupes + vehicle_round_dupes,
            "unknown_on_wire": len(unknown_on_wire),
            "log_entries": logged,
        }
        print(f"\nledger {label}: " + " ".join(f"{k}={v}" for k, v in summary.items() if k != "label"))
        assert not not_final, f"{len(not_final)} command(s) not final, e.g. {not_final[:3]}"
        assert not lost, f"{len(lost)} acknowledged command(s) lost, e.g. {lost[:3]}"
        assert summary["duplicates_applied"] == 0, summary
        assert not unknown_on_wire, f"commands on the wire the database does not know: {unknown_on_wire[:3]}"
        assert not dispatches.exclude(finished_at__isnull=False).exists(), "a round is not final"
        # One dispatch log record per command, written when its round was finalised.
        assert logged == len(rows), f"{logged} dispatch log records for {len(rows)} commands"
        return summary
