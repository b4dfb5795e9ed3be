"""The benchmark suite: every benchmark of the project in one run, one results
file and a short table.

    python -m bench.suite            # full sizes (make bench): 4 minutes on 2 cores (10 the first time)
    python -m bench.suite --quick    # tiny sizes (make bench-quick): a smoke run, 30-90 s

Each benchmark runs as its own process (as ``python -m bench.<name>``, the
command bench/README.md lists), one after the other, on the same bench
database and Redis database; each starts its own Mosquitto (shipped
configuration) on a free port. While one runs, a sampler reads the peak
resident memory (``VmHWM``) of every process of its tree and files it under a
role: worker (Celery, every prefork process), bridge, web (gunicorn),
simulator (the vehicles answering commands or pushing states), broker
(Mosquitto), planner (the planning benchmark, which is ``generate_plan``
in-process) and bench (a benchmark's own process: it submits signals, polls,
measures). Writes bench/results/summary.json (every benchmark's own figures,
the headline figures, peak memory by role and process, the machine's load)
and bench/results/summary.md (the table it prints). Asserts no timing: the
figures are for reading, and for the issue notes.

Steps (full / --quick sizes):
  fanout    dispatch fan-out against the raw MQTT round trip measured in the same
            run, at 1,000 / 10,000 (3 tries each, the median) and 50,000 vehicles
            (one try; quick: 200 / 500), one simulator process a core, 2-4 (quick: 1); then
            the same fan-out with 1 then 2 worker processes (10,000; quick: 500):
            vehicles per second each and the ratio
  telemetry telemetry ingest through the bridge (10,000; quick: 500)
  status    GET /api/vehicles/status (10,000 vehicles, 14 days of history; quick: 300, 1 day)
  logs      GET /api/dispatch/logs (1,000,000 records; quick: 20,000)
  plan      day-ahead plan (1,000 and 10,000 vehicles; quick: 100)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ROLES = ("worker", "bridge", "web", "simulator", "broker", "planner", "bench")


@dataclass(frozen=True)
class Step:
    name: str  # the step, and the key of its figures in summary.json
    module: str  # bench.<module>
    args: tuple[str, ...]
    result: str  # the JSON file it writes under bench/results/
    main_role: str = "bench"  # the role of the benchmark's own process


def steps(quick: bool, simulators: int) -> list[Step]:
    sim = ("--simulators", str(simulators))
    if quick:
        return [
            Step("fanout", "dispatch_fanout",
                 ("--vehicles", "200", "500", "--repeat", "1", "--scaling", "500", "--out", "fanout", *sim),
                 "fanout.json"),
            Step("telemetry", "telemetry_ingest", ("--vehicles", "500",), "telemetry_ingest.json"),
            Step("status", "status_api", ("--vehicles", "300", "--history-days", "1", "--repeat", "3"),
                 "status_api.json"),
            Step("logs", "api_logs", ("--rows", "20000", "--vehicles", "200", "--round-size", "100",
                                      "--repeat", "3"), "api_logs.json"),
            Step("plan", "plan", ("--vehicles", "100",), "plan.json", main_role="planner"),
        ]  # fmt: skip
    return [
        Step("fanout", "dispatch_fanout",
             ("--vehicles", "1000", "10000", "--repeat", "3", "--scaling", "10000", "--out", "fanout", *sim),
             "fanout.json"),
        Step("fanout_50k", "dispatch_fanout",
             ("--vehicles", "50000", "--repeat", "1", "--timeout", "300", "--out", "fanout_50k", *sim),
             "fanout_50k.json"),
        Step("telemetry", "telemetry_ingest", ("--vehicles", "10000",), "telemetry_ingest.json"),
        Step("status", "status_api", ("--vehicles", "10000",), "status_api.json"),
        Step("logs", "api_logs", ("--rows", "1000000",), "api_logs.json"),
        Step("plan", "plan", ("--vehicles", "1000", "10000"), "plan.json", main_role="planner"),
    ]  # fmt: skip


# --- memory ------------------------------------------------------------------------


def role_of(proc: psutil.Process, root_pid: int, main_role: str) -> str | None:
    """The role of a process of a benchmark's tree, from its command line."""
    if proc.pid == root_pid:
        return main_role
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if "mosquitto" in cmd:
        return "broker"
    if "celery" in cmd and "worker" in cmd:
        return "worker"
    if "mqtt_bridge" in cmd:
        return "bridge"
    if "gunicorn" in cmd:
        return "web"
    if "multiprocessing.resource_tracker" in cmd:
        return None
    if "multiprocessing" in cmd or "--multiprocessing-fork" in cmd:
        return "simulator"  # the benchmarks' vehicle fleets are spawned processes
    if "manage.py migrate" in cmd:
        return None  # set-up, not the system under test
    # Forked children of a known process (prefork, gunicorn workers) share its command line,
    # so anything else is a helper of the benchmark itself.
    return "bench"


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) so far, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class MemorySampler:
    """Samples a process tree every ``interval_s``: the peak RSS of each process seen."""

    root: int
    main_role: str
    interval_s: float = 0.25
    peaks: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            role = (
                self.peaks[proc.pid][0]
                if proc.pid in self.peaks
                else role_of(proc, self.root, self.main_role)
            )
            if role is None:
                continue
            rss = peak_rss_mb(proc.pid)
            if rss is not None:
                self.peaks[proc.pid] = (role, max(rss, self.peaks.get(proc.pid, (role, 0.0))[1]))

    def by_role(self) -> dict[str, dict]:
        """Per role: processes seen, the largest one's peak, and the sum of their peaks (MB)."""
        out: dict[str, dict] = {}
        for role, mb in self.peaks.values():
            entry = out.setdefault(role, {"processes": 0, "max_process_mb": 0.0, "sum_mb": 0.0})
            entry["processes"] += 1
            entry["max_process_mb"] = round(max(entry["max_process_mb"], mb), 1)
            entry["sum_mb"] = round(entry["sum_mb"] + mb, 1)
        return out


# --- running -------------------------------------------------------------------------


def run_step(step: Step, env: dict[str, str], results: Path, logs: Path) -> dict:
    out = results / step.result
    out.unlink(missing_ok=True)  # a stale file must not pass for this run's figures
    command = [sys.executable, "-m", f"bench.{step.module}", *step.args]
    print(f"--- {step.name}: {' '.join(command[1:])}", flush=True)
    begin = time.perf_counter()
    load_before = os.getloadavg()
    with open(logs / f"{step.name}.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = MemorySampler(proc.pid, step.main_role)
        sampler.start()
        code = proc.wait()
        sampler.stop()
    wall = time.perf_counter() - begin
    entry = {
        "command": " ".join(["python", *command[1:]]),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": sampler.by_role(),
        "log": str(logs / f"{step.name}.log"),
    }
    if code == 0 and out.exists():
        entry["result"] = json.loads(out.read_text())
    else:
        tail = (logs / f"{step.name}.log").read_text(errors="replace").splitlines()[-15:]
        entry["error"] = (
            f"exit code {code}; no {out.name} written" if not out.exists() else f"exit code {code}"
        )
        print(f"    FAILED ({entry['error']}); last lines of its log:", *tail, sep="\n    ", flush=True)
    print(f"    {wall:.0f} s", flush=True)
    return entry


def headline(benchmarks: dict[str, dict]) -> dict:
    """The figures the issue asks for, from the benchmarks' own results."""
    figures: dict = {}
    fanout = []
    for key in ("fanout", "fanout_50k"):
        for row in benchmarks.get(key, {}).get("result", {}).get("runs", []):
            fanout.append(
                {
                    "vehicles": row["vehicles"],
                    "raw_s": row["raw"]["wall_s"],
                    "system_s": row["system"]["wall_s"],
                    "ratio": row["ratio"],
                    "acked": row["system"]["acked"],
                    "raw_p50_ms": row["raw"]["p50_ms"],
                    "raw_p99_ms": row["raw"]["p99_ms"],
                    "p50_ms": row["system"]["p50_ms"],
                    "p99_ms": row["system"]["p99_ms"],
                    "allocation_s": row["system"].get("allocation_s"),
                    "publishing_s": row["system"].get("publishing_s"),
                }
            )
    figures["fanout"] = fanout
    scaling = {}
    found = benchmarks.get("fanout", {}).get("result", {}).get("scaling") or {}
    for key in ("workers_1", "workers_2"):
        if key in found:
            row = found[key]
            scaling[key] = {
                "vehicles": row["vehicles"],
                "system_s": row["system"]["wall_s"],
                "acked": row["system"]["acked"],
                "vehicles_per_s": row["vehicles_per_s"],
                "published_per_s": row["system"].get("published_per_s"),
                "raw_s": row["raw"]["wall_s"],
            }
    if "ratio" in found:
        scaling["ratio"] = found["ratio"]
    figures["worker_scaling"] = scaling
    telemetry = benchmarks.get("telemetry", {}).get("result")
    if telemetry:
        figures["telemetry"] = {
            "vehicles": telemetry["vehicles"],
            "states_per_s": telemetry["system"]["per_s"],
            "recorded": telemetry["system"]["recorded"],
            "raw_received_per_s": telemetry["raw_subscriber"]["per_s"],
        }
    status = benchmarks.get("status", {}).get("result")
    if status:
        requests = status["requests"]
        whole = next(v for k, v in requests.items() if k.startswith("whole fleet"))
        figures["status_api"] = {
            "vehicles": status["vehicles"],
            "page_100_p50_ms": requests["first page (limit=100)"]["p50_ms"],
            "page_100_p95_ms": requests["first page (limit=100)"]["p95_ms"],
            "whole_fleet_p50_ms": whole["p50_ms"],
            "whole_fleet_p95_ms": whole["p95_ms"],
        }
    logs = benchmarks.get("logs", {}).get("result")
    if logs:
        none = logs["requests"]["none"]
        pages = [run[page] for run in logs["requests"].values() for page in run if page != "matching"]
        figures["logs_api"] = {
            "rows": logs["rows"],
            "first_page_p50_ms": none["first page"]["p50_ms"],
            "first_page_p95_ms": none["first page"]["p95_ms"],
            "deep_page_p50_ms": none.get("deep page (90 %)", {}).get("p50_ms"),
            "worst_p50_ms": max(page["p50_ms"] for page in pages),
        }
    plan = benchmarks.get("plan", {}).get("result")
    if plan:
        figures["plan"] = [
            {"vehicles": r["vehicles"], "wall_s": r["wall_s"], "status": r["status"], "gap": r["gap"],
             "violations": r["violations"]}
            for r in plan["runs"]
        ]  # fmt: skip
    memory: dict[str, float] = {}
    for entry in benchmarks.values():
        for role, peak in entry.get("peak_rss_mb", {}).items():
            memory[role] = max(memory.get(role, 0.0), peak["max_process_mb"])
    figures["peak_rss_mb"] = {role: round(memory[role], 1) for role in ROLES if role in memory}
    return figures


def table(summary: dict) -> str:
    f = summary["figures"]
    machine = summary["machine"]
    lines = [
        f"Benchmark suite ({summary['mode']}), {summary['at'][:16]} UTC, {machine['cpus']} CPUs, "
        f"load average {machine['load_before'][0]} before / {machine['load_after'][0]} after",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for row in f["fanout"]:
        lines.append(
            f"| dispatch fan-out, {row['vehicles']:,} vehicles | {row['system_s']} s against raw MQTT "
            f"{row['raw_s']} s: ratio **{row['ratio']}** ({row['acked']:,} acked) |"
        )
        lines.append(
            f"| publish-to-ack, {row['vehicles']:,} vehicles | p50 {row['p50_ms']:.0f} ms, "
            f"p99 {row['p99_ms']:.0f} ms (raw p50 {row['raw_p50_ms']:.0f}, p99 {row['raw_p99_ms']:.0f}) |"
        )
    scaling = f["worker_scaling"]
    if "ratio" in scaling:
        one, two = scaling["workers_1"], scaling["workers_2"]
        lines.append(
            f"| worker scaling, {one['vehicles']:,} vehicles | 1 worker process {one['vehicles_per_s']:,.0f} "
            f"vehicles/s, 2: {two['vehicles_per_s']:,.0f} vehicles/s: **x{scaling['ratio']}** "
            f"(publishing {one['published_per_s'] or 0:,.0f} and {two['published_per_s'] or 0:,.0f}/s) |"
        )
    if "telemetry" in f:
        t = f["telemetry"]
        lines.append(
            f"| telemetry ingest, {t['vehicles']:,} vehicles at once | "
            f"{t['states_per_s']:,.0f} states/s recorded (raw subscriber {t['raw_received_per_s']:,.0f}/s) |"
        )
    if "status_api" in f:
        s = f["status_api"]
        lines.append(
            f"| `GET /api/vehicles/status`, {s['vehicles']:,} vehicles | "
            f"page of 100 p50 {s['page_100_p50_ms']} ms (p95 {s['page_100_p95_ms']}), "
            f"whole fleet p50 {s['whole_fleet_p50_ms']} ms |"
        )
    if "logs_api" in f:
        g = f["logs_api"]
        lines.append(
            f"| `GET /api/dispatch/logs`, {g['rows']:,} records | "
            f"first page p50 {g['first_page_p50_ms']} ms, 90 % deep {g['deep_page_p50_ms']} ms, "
            f"worst filter p50 {g['worst_p50_ms']} ms |"
        )
    for p in f.get("plan", []):
        gap = "-" if p["gap"] is None else f"{p['gap']:.2%}"
        lines.append(
            f"| day-ahead plan, {p['vehicles']:,} vehicles | {p['wall_s']} s ({p['status']}, gap {gap}, "
            f"{p['violations']} violations) |"
        )
    if f["peak_rss_mb"]:
        memory = ", ".join(f"{role} {mb:.0f}" for role, mb in f["peak_rss_mb"].items())
        lines.append(f"| peak RSS per process (MB) | {memory} |")
    failed = [name for name, entry in summary["benchmarks"].items() if "error" in entry]
    if failed:
        lines += ["", f"FAILED: {', '.join(failed)} (see summary.json and the logs)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run every benchmark; write bench/results/summary.{json,md}."
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a minute or so")
    parser.add_argument(
        "--only", nargs="+", metavar="STEP", help="only these steps: fanout, telemetry, status, logs, plan"
    )
    parser.add_argument("--simulators", type=int, default=None,
                        help="vehicle processes of the fan-out (quick 1, full one a core, 2-4)")  # fmt: skip
    parser.add_argument("--database-url", default="postgres://v2g:v2g@127.0.0.1:5432/v2g_bench")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON files go")
    args = parser.parse_args(argv)

    # One simulator process per core (2-4) at full size: one Python process acking
    # 50,000 commands is slower than the platform, which would flatter the ratio.
    simulators = args.simulators or (1 if args.quick else min(4, max(2, os.cpu_count() or 2)))
    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.broker_url,
        "BENCH_RESULTS": str(results),
        "PYTHONUNBUFFERED": "1",
    }
    # The benchmarks take --database-url themselves (defaults in their --help); pass it to those that do.
    chosen = [s for s in steps(args.quick, simulators) if not args.only or s.name.split("_")[0] in args.only]
    began = datetime.now(UTC)
    load_before = os.getloadavg()
    if any(step.module != "plan" for step in chosen):
        # One migrate for every step (each benchmark would run its own otherwise).
        from bench.dispatch_fanout import database_migrate

        database_migrate(args.database_url, {**env, "DJANGO_SETTINGS_MODULE": "v2g_project.settings"})
        env["BENCH_MIGRATED"] = args.database_url
    benchmarks = {}
    for step in chosen:
        step_args = step.args
        if step.module != "plan":
            step_args = (*step_args, "--database-url", args.database_url)
        if step.module == "dispatch_fanout":
            step_args = (*step_args, "--broker-url", args.broker_url)
        benchmarks[step.name] = run_step(
            Step(step.name, step.module, step_args, step.result, step.main_role), env, results, logs
        )
    summary = {
        "benchmark": "suite",
        "mode": "quick" if args.quick else "full",
        "at": began.isoformat(),
        "wall_s": round((datetime.now(UTC) - began).total_seconds(), 1),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "simulators": simulators,
        "benchmarks": benchmarks,
    }
    summary["figures"] = headline(benchmarks)
    (results / "summary.json").write_text(json.dumps(summary, indent=2))
    text = table(summary)
    (results / "summary.md").write_text(text)
    print()
    print(text)
    print(f"written {results / 'summary.json'} and {results / 'summary.md'}")
    return 1 if any("error" in entry for entry in benchmarks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
