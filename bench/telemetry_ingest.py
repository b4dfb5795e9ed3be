"""Telemetry ingest: N vehicles push their state at once; how fast does the
bridge record them (latest state + history) in the database?

    python -m bench.telemetry_ingest --vehicles 10000

Against a raw MQTT subscriber receiving the same burst in the same run. Uses
its own Mosquitto (shipped configuration), PostgreSQL (DATABASE_URL, default
postgres://v2g:v2g@127.0.0.1:5432/v2g_bench) and one bridge process. Writes
bench/results/telemetry_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.dispatch_fanout import RESULTS, ROOT, database_migrate, start_broker


def burst(url: str, vehicle_ids: list[str], qos: int) -> float:
    """Publish one state per vehicle as fast as possible; returns the start time."""
    from v2g_project import mqtt
    from v2g_project.config import MqttConfig

    cfg = MqttConfig(url=url)
    client = mqtt.client_create(cfg, "bench-push", will=False)
    mqtt.connect(client, cfg)
    stamp = datetime.now(UTC).isoformat()
    begin = time.perf_counter()
    infos = []
    for vid in vehicle_ids:
        payload = json.dumps(
            {"vehicle_id": vid, "soc": 0.61, "plugged_in": True, "power_kw": -3.7, "timestamp": stamp}
        )
        infos.append(client.publish(f"v2g/vehicle/state/{vid}", payload, qos=qos))
    for info in infos:
        info.wait_for_publish(30)
    mqtt.disconnect(client)
    return begin


def raw_receive(url: str, vehicle_ids: list[str], qos: int) -> dict:
    from v2g_project import mqtt
    from v2g_project.config import MqttConfig

    cfg = MqttConfig(url=url)
    client = mqtt.client_create(cfg, "bench-raw-sub", will=False)
    got, done, last = [0], threading.Event(), [0.0]

    def on_message(*_):
        got[0] += 1
        last[0] = time.perf_counter()
        if got[0] == len(vehicle_ids):
            done.set()

    client.on_message = on_message
    mqtt.connect(client, cfg)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe("v2g/vehicle/state/+", qos=qos)
    subscribed.wait(10)
    begin = burst(url, vehicle_ids, qos)
    done.wait(60)
    mqtt.disconnect(client)
    wall = (last[0] or time.perf_counter()) - begin
    return {"received": got[0], "wall_s": round(wall, 3), "per_s": round(got[0] / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Telemetry ingest through the bridge.")
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--database-url", default="postgres://v2g:v2g@127.0.0.1:5432/v2g_bench")
    parser.add_argument(
        "--qos", type=int, default=0, choices=(0, 1), help="QoS of the pushes (platform default 0)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="v2g-bench-tel-"))
    broker, url = start_broker(workdir)
    env = {
        **os.environ, "DATABASE_URL": args.database_url, "K_MQTT__URL": url,
        "K_MQTT__QOS__TELEMETRY": str(args.qos), "K_METRICS__MULTIPROC_DIR": str(workdir / "prometheus"),
        "K_LOGGING__LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "v2g_project.settings",
    }  # fmt: skip
    os.environ.update(env)
    database_migrate(args.database_url, env)
    import django

    django.setup()
    from django.utils import timezone

    from fleet.models import Fleet, Vehicle
    from telemetry.models import VehicleState

    fleet, _ = Fleet.objects.get_or_create(id="bench-telemetry", defaults={"name": "Bench telemetry"})
    ids = [f"bt-{n:06d}" for n in range(args.vehicles)]
    Vehicle.objects.bulk_create(
        [Vehicle(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11) for vid in ids],
        ignore_conflicts=True, batch_size=5000,
    )  # fmt: skip
    with open(workdir / "bridge.log", "wb") as log:
        bridge = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "mqtt bridge running" not in (workdir / "bridge.log").read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("bridge did not connect")
            time.sleep(0.1)
        raw = raw_receive(url, ids, args.qos)
        since = timezone.now()
        begin = burst(url, ids, args.qos)
        recorded, deadline = 0, time.perf_counter() + 120
        fresh = VehicleState.objects.filter(vehicle__fleet=fleet, received_at__gte=since)
        while time.perf_counter() < deadline:
            recorded = fresh.count()
            if recorded >= args.vehicles:
                break
            time.sleep(0.05 if recorded > args.vehicles * 0.9 else 0.2)
        wall = time.perf_counter() - begin
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        broker.terminate()
        broker.wait(10)
    result = {
        "benchmark": "telemetry_ingest", "at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "vehicles": args.vehicles, "qos": args.qos, "raw_subscriber": raw,
        "system": {"recorded": recorded, "wall_s": round(wall, 3), "per_s": round(recorded / wall, 1)},
    }  # fmt: skip
    print(
        f"{'N':>7} {'qos':>3} {'raw recv/s':>11} {'raw got':>8} {'recorded':>9} {'wall s':>7} {'states/s':>9}"
    )
    print(
        f"{args.vehicles:>7} {args.qos:>3} {raw['per_s']:>11} {raw['received']:>8} "
        f"{recorded:>9} {result['system']['wall_s']:>7} {result['system']['per_s']:>9}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "telemetry_ingest.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
