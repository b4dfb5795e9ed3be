"""The benchmark suite end to end at its tiny sizes (``python -m bench.suite --quick``):
every benchmark runs against real Mosquitto (its own), Redis, PostgreSQL, Celery
worker, bridge and gunicorn processes, and summary.json / summary.md carry every
figure. No timing is asserted: the figures are the benchmarks' business."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.conftest import ROOT, database_url, subprocess_env


def _bench_urls() -> tuple[str, str]:
    """A database and a Redis database of the bench's own, beside the tests' (the
    bench migrates, fills and truncates its database, and purges its queue)."""
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        pytest.skip("the benchmarks run on PostgreSQL")
    base = database_url(db)
    bench_db = base.rsplit("/", 1)[0] + f"/{db['NAME']}_benchquick"
    broker = os.environ.get("V2G_BENCH_BROKER_URL")
    if not broker:
        parts = urlsplit(settings.CELERY_BROKER_URL)
        ours = int(parts.path.lstrip("/") or 0)
        broker = urlunsplit(parts._replace(path=f"/{14 if ours != 14 else 13}"))
    return bench_db, broker


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.services
@pytest.mark.timeout(300)
def test_quick_suite_writes_every_figure(tmp_path):
    bench_db, broker = _bench_urls()
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--quick", "--results", str(results),
         "--database-url", bench_db, "--broker-url", broker],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    summary = json.loads((results / "summary.json").read_text())
    table = (results / "summary.md").read_text()
    assert table in proc.stdout  # the table is printed too
    assert summary["mode"] == "quick"
    assert set(summary["benchmarks"]) == {"fanout", "telemetry", "status", "logs", "plan"}
    for name, entry in summary["benchmarks"].items():
        assert entry["exit_code"] == 0 and "error" not in entry and entry["result"], name

    figures = summary["figures"]
    assert [row["vehicles"] for row in figures["fanout"]] == [200, 500]
    for row in figures["fanout"]:
        assert row["acked"] == row["vehicles"]  # nothing lost
        for key in ("raw_s", "system_s", "ratio", "p50_ms", "p99_ms", "raw_p50_ms", "raw_p99_ms"):
            assert _number(row[key]) and row[key] > 0, (row["vehicles"], key)
    scaling = figures["worker_scaling"]
    for workers in ("workers_1", "workers_2"):
        assert scaling[workers]["acked"] == scaling[workers]["vehicles"] == 500
        assert _number(scaling[workers]["vehicles_per_s"])
    assert _number(scaling["ratio"])
    assert figures["telemetry"]["recorded"] == 500 and _number(figures["telemetry"]["states_per_s"])
    assert all(_number(v) for v in figures["status_api"].values())
    assert all(_number(v) for v in figures["logs_api"].values())
    assert [p["vehicles"] for p in figures["plan"]] == [100] and figures["plan"][0]["violations"] == 0
    memory = figures["peak_rss_mb"]
    assert {"worker", "bridge", "web", "simulator", "broker", "planner", "bench"} <= set(memory)
    assert all(_number(mb) and mb > 0 for mb in memory.values())
    for line in ("dispatch fan-out, 500 vehicles", "worker scaling", "telemetry ingest", "peak RSS"):
        assert line in table
    # Each benchmark's own file is there as well (bench/README.md's commands write the same).
    for name in ("fanout", "telemetry_ingest", "status_api", "api_logs", "plan"):
        assert (results / f"{name}.json").exists(), name


def test_headline_and_table_name_a_failed_step_and_keep_the_others():
    """Pure: the summary of results where one step failed (no I/O)."""
    from bench.suite import headline, table

    run = {"wall_s": 2.0, "acked": 500, "p50_ms": 90.0, "p99_ms": 120.0, "published_per_s": 900.0}
    raw = {"wall_s": 1.0, "p50_ms": 50.0, "p99_ms": 70.0}
    benchmarks = {
        "fanout": {
            "result": {
                "runs": [{"vehicles": 500, "raw": raw, "system": run, "ratio": 2.0}],
                "scaling": {
                    "workers_1": {"vehicles": 500, "raw": raw, "system": run, "vehicles_per_s": 250.0},
                    "workers_2": {"vehicles": 500, "raw": raw, "system": run, "vehicles_per_s": 300.0},
                    "ratio": 1.2,
                },
            },
            "peak_rss_mb": {"worker": {"processes": 3, "max_process_mb": 140.0, "sum_mb": 400.0}},
        },
        "plan": {"error": "exit code 1; no plan.json written", "peak_rss_mb": {}},
    }
    figures = headline(benchmarks)
    assert figures["fanout"][0]["ratio"] == 2.0 and figures["worker_scaling"]["ratio"] == 1.2
    assert "plan" not in figures and figures["peak_rss_mb"] == {"worker": 140.0}
    summary = {
        "mode": "quick", "at": "2026-12-06T05:00:00", "benchmarks": benchmarks, "figures": figures,
        "machine": {"cpus": 2, "load_before": [1.0], "load_after": [2.0]},
    }  # fmt: skip
    text = table(summary)
    assert "ratio **2.0**" in text and "**x1.2**" in text and "worker 140" in text
    assert "FAILED: plan" in text
