"""Raw MQTT round trip: N commands answered by N acks, no Django, no Celery.

The baseline every dispatch benchmark is compared with: one platform client
publishes one command per vehicle on ``vehicle/<id>/command``; a fleet process
(one client subscribed to ``vehicle/+/command``) answers each with an ack on
``vehicle/<id>/ack``; we time from the first publish to the last ack.

    python -m bench.mqtt_roundtrip --vehicles 1000 10000 [--url tcp://127.0.0.1:1883] [--fleets 4]

``--fleets K``: the vehicles are answered by K processes sharing one
subscription (``$share/...``, MQTT 5 / Mosquitto 2): a single Python client
answering 50,000 commands is slower than the platform it would measure.

Prints a table and writes bench/results/mqtt_roundtrip.json. Clients come from
the project's factory (TCP_NODELAY, raised in-flight window), so the figures
are those of the transport the platform ships with.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from v2g_project import mqtt
from v2g_project.config import MqttConfig

RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def command_filter(prefix: str, fleets: int) -> str:
    """The fleets' subscription: shared (load-balanced by the broker) when there are several."""
    return f"$share/{prefix}-fleet/{prefix}/+/command" if fleets > 1 else f"{prefix}/+/command"


def _fleet(url: str, prefix: str, ready, stop, fleets: int = 1) -> None:
    cfg = MqttConfig(url=url)
    client = mqtt.client_create(cfg, "bench-fleet", will=False)

    def on_message(c, _userdata, msg):
        vehicle = msg.topic.split("/")[-2]
        command = json.loads(msg.payload)
        c.publish(
            f"{prefix}/{vehicle}/ack",
            json.dumps({"command_id": command["command_id"], "vehicle_id": vehicle, "status": "accepted"}),
            qos=1,
        )

    client.on_message = on_message
    mqtt.connect(client, cfg)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(command_filter(prefix, fleets), qos=1)
    subscribed.wait(10)
    ready.release()
    stop.wait()
    mqtt.disconnect(client)


def fleets_start(target, url: str, prefix: str, fleets: int) -> tuple[list, object]:
    """K spawned vehicle processes running ``target(url, prefix, ready, stop, fleets)``,
    once every one has subscribed; returns them and their stop event."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Semaphore(0), ctx.Event()
    procs = [
        ctx.Process(target=target, args=(url, prefix, ready, stop, fleets), daemon=True)
        for _ in range(fleets)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        if not ready.acquire(timeout=30):
            stop.set()
            raise RuntimeError("a fleet process did not subscribe")
    return procs, stop


def run(url: str, vehicles: int, timeout_s: float, fleets: int = 1) -> dict:
    prefix = f"bench-{int(time.time() * 1000)}"
    procs, stop = fleets_start(_fleet, url, prefix, fleets)

    cfg = MqttConfig(url=url)
    client = mqtt.client_create(cfg, "bench-platform", will=False)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = threading.Event()
    lock = threading.Lock()

    def on_ack(_c, _userdata, msg):
        now = time.perf_counter()
        command_id = json.loads(msg.payload)["command_id"]
        with lock:
            started = sent.pop(command_id, None)
            if started is not None:
                latencies.append(now - started)
                if len(latencies) == vehicles:
                    done.set()

    client.on_message = on_ack
    mqtt.connect(client, cfg)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe(f"{prefix}/+/ack", qos=1)
    subscribed.wait(10)

    begin = time.perf_counter()
    for n in range(vehicles):
        command_id = f"c{n}"
        with lock:
            sent[command_id] = time.perf_counter()
        client.publish(
            f"{prefix}/v{n}/command",
            json.dumps({"command_id": command_id, "vehicle_id": f"v{n}", "power_kw": 7.4}),
            qos=1,
        )
    finished = done.wait(timeout_s)
    wall = time.perf_counter() - begin
    mqtt.disconnect(client)
    stop.set()
    for proc in procs:
        proc.join(10)
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "vehicles": vehicles,
        "fleets": fleets,
        "acked": len(latencies),
        "complete": finished,
        "wall_s": round(wall, 3),
        "acks_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--url", default="tcp://127.0.0.1:1883")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--fleets", type=int, default=1, help="vehicle processes sharing the commands")
    args = parser.parse_args()
    rows = [run(args.url, n, args.timeout, args.fleets) for n in args.vehicles]
    print(f"{'vehicles':>9} {'acked':>7} {'wall s':>8} {'acks/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['vehicles']:>9} {row['acked']:>7} {row['wall_s']:>8} {row['acks_per_s']:>9} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "mqtt_roundtrip.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "mqtt_roundtrip",
                "at": datetime.now(UTC).isoformat(),
                "url": args.url,
                "machine": platform.platform(),
                "runs": rows,
            },
            indent=2,
        )
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
