"""Dispatch fan-out: the whole system against the raw MQTT round trip, in one run.

For each N it measures, on the same broker:
  (a) raw: N commands answered by N acks with bare paho clients (bench.mqtt_roundtrip);
  (b) system: a signal accepted by ``signal_submit`` until all N acks are recorded
      in the database, through a real Celery worker (prefork, 2 processes), the
      real MQTT bridge and N simulated vehicles acking at once;
and the publish-to-ack latency percentiles of both.

    python -m bench.dispatch_fanout --vehicles 1000 10000 [--concurrency 2] [--simulators 1]

``--concurrency``: Celery worker processes (prefork). ``--simulators K``: the
vehicles are answered by K processes sharing the command subscription, in the
raw round trip and in the system run alike (one Python process answering
50,000 commands is slower than the platform it would measure).

Needs Redis, PostgreSQL (DATABASE_URL, default postgres://v2g:v2g@127.0.0.1:5432/v2g_bench,
created if missing) and the mosquitto binary: it starts its own broker from
deploy/mosquitto/mosquitto.conf on a free port. Writes bench/results/dispatch_fanout.json
(``--out NAME``: bench/results/NAME.json; ``BENCH_RESULTS`` moves the directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    lines = []
    for line in (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines():
        if line.startswith(("listener", "persistence", "log_dest")):
            continue
        lines.append(line)
    lines += [f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr"]
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"tcp://127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def fleet_responder(url: str, prefix: str, ready, stop, fleets: int = 1) -> None:
    """N vehicles (or their share of them) behind one client: every command acked at once."""
    from bench.mqtt_roundtrip import command_filter
    from v2g_project import mqtt
    from v2g_project.config import MqttConfig

    cfg = MqttConfig(url=url)
    client = mqtt.client_create(cfg, "bench-vehicles", will=False)

    def on_message(c, _userdata, msg):
        command = json.loads(msg.payload)
        ack = {
            "command_id": command["command_id"],
            "vehicle_id": command["vehicle_id"],
            "status": "accepted",
            "timestamp": datetime.now(UTC).isoformat(),
        }
        c.publish(f"vehicle/{command['vehicle_id']}/ack", json.dumps(ack), qos=1)

    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    mqtt.connect(client, cfg)
    client.subscribe(command_filter(prefix, fleets), qos=1)
    subscribed.wait(10)
    ready.release()
    stop.wait()
    mqtt.disconnect(client)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _postgres_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description="Dispatch fan-out against the raw MQTT round trip.")
    parser.add_argument("--vehicles", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--database-url", default="postgres://v2g:v2g@127.0.0.1:5432/v2g_bench")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--repeat", type=int, default=3, help="Tries per N; the median ratio is reported.")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("BENCH_CONCURRENCY", "2")),
        help="Celery worker processes (default 2)",
    )
    parser.add_argument("--simulators", type=int, default=1, help="vehicle processes sharing the commands")
    parser.add_argument("--out", default="dispatch_fanout", help="results file name (without .json)")
    parser.add_argument("--scaling", type=int, metavar="N", default=0,
                        help="then N vehicles with 1, then 2 worker processes (throughput)")  # fmt: skip
    args = parser.parse_args()

    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="v2g-bench-"))
    broker, mqtt_url = start_broker(workdir)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.broker_url,
        "K_MQTT__URL": mqtt_url,
        "K_METRICS__MULTIPROC_DIR": str(workdir / "prometheus"),
        "K_LOGGING__LEVEL": "WARNING",
        # The ack deadline and the publish expiry as long as the run may take: a round
        # of 50,000 on a busy 2-core machine must not be cut short (timed out, fallback).
        "K_DISPATCH__ACK_TIMEOUT_SECONDS": str(int(args.timeout)),
        "K_DISPATCH__PUBLISH_EXPIRES_SECONDS": str(int(args.timeout)),
        "K_DISPATCH__DEFAULT_STRATEGY": "equal",
        "DJANGO_SETTINGS_MODULE": "v2g_project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)  # this process is a platform process too (it submits the signals)
    database_migrate(args.database_url, env)
    print(f"[{time.perf_counter() - began:6.1f} s] database migrated", flush=True)

    import django

    django.setup()
    from django.conf import settings

    from bench.mqtt_roundtrip import fleets_start
    from bench.mqtt_roundtrip import run as raw_round_trip
    from v2g_project.celery import app
    from v2g_project.queues import queue_names

    with app.connection_for_write() as conn:
        for name in queue_names(settings.V2G.celery):  # every queue a task is routed to
            conn.default_channel.queue_purge(name)
    logs = workdir / "logs"
    logs.mkdir()

    def worker_command(concurrency: int) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", "v2g_project", "worker"),
            *("--concurrency", str(concurrency)),
            *("--without-gossip", "--without-mingle", "--loglevel", "WARNING"),
        ]  # fmt: skip

    def start(name: str, command: list[str]) -> subprocess.Popen:
        with open(logs / f"{name}.log", "ab") as log:
            return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    procs = {
        "worker": start("worker", worker_command(args.concurrency)),
        "bridge": start("bridge", [sys.executable, "manage.py", "mqtt_bridge"]),
    }
    responders, stop = fleets_start(fleet_responder, mqtt_url, "vehicle", args.simulators)

    def measure(n: int, repeat: int) -> dict:
        """The raw round trip and the system, back to back, ``repeat`` times: the median try."""
        groups = {
            "worker": [procs["worker"].pid, *_children(procs["worker"].pid)],
            "bridge": [procs["bridge"].pid],
            "vehicles": [responder.pid for responder in responders],
            "mosquitto": [broker.pid],
            "postgres": _postgres_pids(),
            "bench": [os.getpid()],
        }
        tries = []
        for _ in range(repeat):
            raw = raw_round_trip(mqtt_url, n, args.timeout, args.simulators)
            before = cpu_snapshot(groups)
            system = _system_run(n, args.timeout)
            after = cpu_snapshot(groups)
            system["cpu_s"] = {name: round(after[name] - before[name], 2) for name in groups}
            tries.append((system["wall_s"] / raw["wall_s"], raw, system))
            print(
                f"[{time.perf_counter() - began:6.1f} s] N={n}: raw {raw['wall_s']} s, "
                f"system {system['wall_s']} s ({system['acked']} acked; allocation "
                f"{system.get('allocation_s')} s, publishing {system.get('publishing_s')} s)",
                flush=True,
            )
        # The median try by ratio: raw and system measured back to back.
        _ratio, raw, system = sorted(tries, key=lambda t: t[0])[len(tries) // 2]
        system["tries"] = [
            {"raw_s": t[1]["wall_s"], "system_s": t[2]["wall_s"], "ratio": round(t[0], 2)} for t in tries
        ]
        return {
            "vehicles": n,
            "raw": raw,
            "system": system,
            "ratio": round(system["wall_s"] / raw["wall_s"], 2),
            "p99_ratio": round(system["p99_ms"] / raw["p99_ms"], 2),
        }

    def worker_restart(concurrency: int) -> None:
        procs["worker"].send_signal(signal.SIGTERM)
        procs["worker"].wait(60)
        procs["worker"] = start("worker", worker_command(concurrency))
        _warm_up(procs)
        print(f"[{time.perf_counter() - began:6.1f} s] worker restarted with {concurrency} process(es)")

    rows, scaling, current = [], {}, [args.concurrency]
    try:
        _warm_up(procs)
        print(f"[{time.perf_counter() - began:6.1f} s] worker, bridge and {args.simulators} simulator(s) up")
        rows = [measure(n, args.repeat) for n in args.vehicles]
        if args.scaling:
            # The same fan-out with 2 worker processes (those of the runs above, unless
            # --concurrency said otherwise), then 1: back to back, under the same load.
            for workers in (2, 1):
                if workers != current[0]:
                    worker_restart(workers)
                    current[0] = workers
                row = measure(args.scaling, 1)
                row["worker_processes"] = workers
                row["vehicles_per_s"] = round(row["system"]["acked"] / row["system"]["wall_s"], 1)
                scaling[f"workers_{workers}"] = row
            scaling["ratio"] = round(
                scaling["workers_2"]["vehicles_per_s"] / scaling["workers_1"]["vehicles_per_s"], 2
            )
    finally:
        stop.set()
        for responder in responders:
            responder.join(10)
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(30)
        broker.terminate()
        broker.wait(10)

    print(f"{'N':>7} {'raw s':>7} {'system s':>9} {'ratio':>6} {'raw p50':>8} {'raw p99':>8} "
          f"{'sys p50':>8} {'sys p99':>8} {'acked':>7}")  # fmt: skip
    for row in rows:
        raw, system = row["raw"], row["system"]
        print(
            f"{row['vehicles']:>7} {raw['wall_s']:>7} {system['wall_s']:>9} {row['ratio']:>6} "
            f"{raw['p50_ms']:>8} {raw['p99_ms']:>8} {system['p50_ms']:>8} {system['p99_ms']:>8} "
            f"{system['acked']:>7}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    summary = {
        "benchmark": "dispatch_fanout",
        "at": datetime.now(UTC).isoformat(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "worker_processes": args.concurrency,
        "simulators": args.simulators,
        "runs": rows,
        "scaling": scaling,
    }
    out.write_text(json.dumps(summary, indent=2))
    for row in rows:
        print(f"N={row['vehicles']}: tries {row['system']['tries']}")
        print(f"  CPU seconds during the median system run: {row['system']['cpu_s']}")
    if scaling:
        one, two = scaling["workers_1"], scaling["workers_2"]
        print(
            f"{args.scaling} vehicles: 1 worker process {one['vehicles_per_s']} vehicles/s "
            f"({one['system']['wall_s']} s, raw {one['raw']['wall_s']} s), "
            f"2 processes {two['vehicles_per_s']} "
            f"vehicles/s ({two['system']['wall_s']} s, raw {two['raw']['wall_s']} s): x{scaling['ratio']}"
        )
    print(f"written {out} (process logs in {logs})")


def _ensure_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = url.replace(f"/{name}", "/postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def database_migrate(url: str, env: dict[str, str]) -> None:
    """Create the bench database if missing and migrate it, unless the suite did
    already (it sets BENCH_MIGRATED to the URL it migrated: one migrate, not one a step)."""
    _ensure_database(url)
    if os.environ.get("BENCH_MIGRATED") != url:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def _warm_up(procs) -> None:
    from v2g_project.tasks import health_ping

    health_ping.delay("warm").get(timeout=60)
    time.sleep(1)
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} died")


def _fleet(n: int) -> str:
    from django.utils import timezone

    from dispatch.models import Command
    from fleet.models import Fleet, Vehicle
    from telemetry.models import VehicleState

    fleet_id = f"bench-{n}"
    fleet, _ = Fleet.objects.get_or_create(id=fleet_id, defaults={"name": f"Bench {n}"})
    existing = Vehicle.objects.filter(fleet=fleet).count()
    if existing < n:
        Vehicle.objects.bulk_create(
            [Vehicle(id=f"b{n}-{i:06d}", fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11)
             for i in range(existing, n)], batch_size=5000,
        )  # fmt: skip
    now = timezone.now()
    # Setpoints of an earlier run would still hold these vehicles: release them.
    Command.objects.filter(vehicle__fleet=fleet, valid_until__gt=now).update(valid_until=now)
    VehicleState.objects.bulk_create(
        [VehicleState(vehicle_id=vid, soc=0.8, plugged_in=True, reported_at=now, received_at=now)
         for vid in Vehicle.objects.filter(fleet=fleet).values_list("id", flat=True)],
        update_conflicts=True, unique_fields=["vehicle"],
        update_fields=["soc", "plugged_in", "online", "reported_at", "received_at"], batch_size=5000,
    )  # fmt: skip
    return fleet_id


def _system_run(n: int, timeout_s: float) -> dict:
    from django.db.models import Count, Max, Min, Q

    from dispatch import services
    from dispatch.models import Command, CommandStatus

    fleet_id = _fleet(n)
    begin = time.perf_counter()
    _signal, dispatch = services.signal_submit(
        signal_type="FCR", power_kw=5.0 * n, duration_s=900, fleet_id=fleet_id, source="cli"
    )
    deadline = begin + timeout_s
    acked = 0
    commands = Command.objects.filter(dispatch=dispatch)
    while time.perf_counter() < deadline:
        # One query a poll, and polls spaced by the estimated time left (a third of
        # it, 5-250 ms): counting 50,000 commands every 10 ms would take the CPU
        # the system under test needs, and the end is still seen within a few ms.
        counts = commands.aggregate(
            acked=Count("id", filter=Q(status=CommandStatus.ACKED)),
            remaining=Count("id", filter=Q(status__in=(CommandStatus.PENDING, CommandStatus.PUBLISHED))),
        )
        acked, remaining = counts["acked"], counts["remaining"]
        if acked >= n or (remaining == 0 and acked):
            break
        elapsed = time.perf_counter() - begin
        left_s = (n - acked) * elapsed / acked if acked else 0.25
        time.sleep(min(0.25, max(0.005, left_s / 3)))
    wall = time.perf_counter() - begin
    recorded = Command.objects.filter(dispatch=dispatch, latency_s__isnull=False)
    latencies = [value * 1000 for value in recorded.values_list("latency_s", flat=True)]
    # Where the time went, from the database's own timestamps: signal accepted ->
    # first command published (allocation), first -> last published (the workers'
    # publishing), last published -> last ack recorded.
    span = commands.aggregate(first=Min("published_at"), last=Max("published_at"), acked=Max("acked_at"))
    phases = {}
    if span["first"] and span["last"]:
        publish_s = (span["last"] - span["first"]).total_seconds()
        phases = {
            "allocation_s": round((span["first"] - dispatch.created_at).total_seconds(), 3),
            "publishing_s": round(publish_s, 3),
            "published_per_s": round(n / publish_s, 1) if publish_s > 0 else None,
            "last_ack_after_last_publish_s": round((span["acked"] - span["last"]).total_seconds(), 3)
            if span["acked"]
            else None,
        }
    return {
        "vehicles": n,
        "acked": acked,
        "wall_s": round(wall, 3),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        **phases,
    }


if __name__ == "__main__":
    main()
