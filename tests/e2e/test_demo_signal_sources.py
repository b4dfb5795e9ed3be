"""``manage.py demo --rte-gen --rte-gen-scenario NAME --rte``: the synthetic generator and
the RTE connector (mock mode) feed the running platform; their signals reach the
simulated vehicles and come back acknowledged; Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT, free_port, subprocess_env, wait_for


def _acked_signals(db_path, source: str) -> int:
    """Signals of ``source`` whose first round got at least one vehicle ack (read from the demo's database)."""
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT COUNT(DISTINCT s.id) FROM dispatch_flexibilitysignal s "
                "JOIN dispatch_dispatch d ON d.signal_id = s.id "
                "JOIN dispatch_command c ON c.dispatch_id = d.id "
                "WHERE s.source = ? AND c.status = 'acked'",
                (source,),
            ).fetchone()
    except sqlite3.Error:  # not migrated yet, or locked for a moment
        return 0
    return row[0]


def _count(db_path, sql: str, *args) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql, args).fetchone()[0]


@pytest.mark.services
@pytest.mark.e2e
def test_demo_with_the_generator_and_the_rte_connector(tmp_path):
    db_path = tmp_path / "demo.sqlite3"
    env = subprocess_env(
        DATABASE_URL="",
        CELERY_BROKER_URL="",
        K_DATABASE__SQLITE_PATH=str(db_path),
        K_CELERY__BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing there: the embedded transport
        K_CELERY__FILESYSTEM_DIR=str(tmp_path / "celery"),
        K_MQTT__URL=f"tcp://127.0.0.1:{free_port()}",  # nothing there: the embedded broker
    )
    # Fast, short signals from both sources (they share the fleet: a vehicle committed to
    # one signal is not eligible for another), given as the
    # issue's example gives them: a config file after the run command.
    config = tmp_path / "config.preprod.yaml"
    config.write_text(
        "rteGenerator:\n  min_interval_seconds: 4\n  max_interval_seconds: 6\n"
        "  min_duration_seconds: 15\n  max_duration_seconds: 30\n"  # short: vehicles are soon free again
        f"rte:\n  poll_interval_seconds: 2\n  mock:\n    address: 127.0.0.1:{free_port()}\n    scenario: steady\n"
    )
    command = [
        sys.executable, "manage.py", "demo", "-c", str(config), "--port", str(free_port()), "--vehicles", "40",
        "--rte-gen", "--rte-gen-scenario", "steady", "--rte",
    ]  # fmt: skip
    demo = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: "Ctrl-C stops everything" in "".join(lines), 120, "the demo to start")
        output = "".join(lines)
        assert "signal generator: scenario steady" in output
        assert "RTE connector: mock mode, mock on 127.0.0.1:" in output
        assert "started rte-generator" in output and "started rte-connector" in output
        try:
            wait_for(
                lambda: _acked_signals(db_path, "generator") >= 1 and _acked_signals(db_path, "rte") >= 1,
                120,
                "generator and RTE signals acknowledged by simulated vehicles",
            )
        except AssertionError as exc:
            logs = sorted((ROOT / "var" / "log").glob("*.log"))
            tails = "".join(f"\n--- {p.name}\n" + "".join(p.read_text().splitlines(True)[-15:]) for p in logs)
            raise AssertionError(f"{exc}\n--- demo console\n{''.join(lines)[-3000:]}{tails}") from None
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, "".join(lines)
        reader.join(10)
    finally:
        if demo.poll() is None:
            demo.kill()
    output = "".join(lines)
    assert "all processes stopped" in output
    for pid in map(int, re.findall(r"started \S+ \(pid (\d+)", output)):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # With the generator and the connector on, the demo's own FCR signals stay off.
    assert _count(db_path, "SELECT COUNT(*) FROM dispatch_flexibilitysignal WHERE source = 'cli'") == 0
    # Every activation received was handled (none left pending) and became one signal at most.
    assert _count(db_path, "SELECT COUNT(*) FROM dispatch_rteactivation WHERE status = 'pending'") == 0
    assert _count(
        db_path,
        "SELECT COUNT(*) FROM (SELECT external_id FROM dispatch_flexibilitysignal WHERE source = 'rte' "
        "GROUP BY external_id HAVING COUNT(*) > 1)",
    ) == 0  # fmt: skip


def test_demo_refuses_a_missing_config_file(tmp_path):
    from tests.test_commands import manage

    result = manage("demo", "-c", str(tmp_path / "nope.yaml"), "--rte-gen")
    assert result.returncode == 1
    assert "nope.yaml (from -c/--config) does not exist" in result.stderr
