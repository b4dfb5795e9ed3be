"""The multiprocess metrics directory (v2g_project/multiproc.py): file names per
host and pid, liveness locks, metrics_reset, dead processes' live gauges, idle
files of short processes; and the Celery queue depth read at scrape time."""

from __future__ import annotations

import multiprocessing
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import ROOT, free_port, metric_value, subprocess_env, wait_for
from v2g_project import celery_metrics, multiproc

PROBE = """
import sys, django
django.setup()
from prometheus_client import Counter, Gauge
Counter(sys.argv[1] + "_events", "probe").inc(3)
Gauge(sys.argv[1] + "_live", "probe", multiprocess_mode="livesum").set(5)
print("ready", flush=True)
sys.stdin.read()
"""


def start_probe(path: Path | None, name: str) -> subprocess.Popen:
    """A Django process that writes a counter (3) and a live gauge (5), then waits."""
    env = subprocess_env(**({"K_METRICS__MULTIPROC_DIR": str(path)} if path else {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, name],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_process_identifier_is_unique_across_hosts_and_has_no_underscore():
    identifier = multiproc.process_identifier(1)
    assert identifier.endswith("-1") and "_" not in identifier
    assert multiproc.process_identifier() == multiproc.process_identifier(__import__("os").getpid())


def _child_identifier(queue) -> None:
    queue.put(multiproc.process_identifier())
    time.sleep(30)


def test_a_forked_child_holds_a_lock_of_its_own(settings):
    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_identifier, args=(queue,))
    child.start()
    try:
        identifier = queue.get(timeout=10)
        assert identifier == multiproc.process_identifier(child.pid)
        assert identifier in multiproc.live_processes(path)
    finally:
        child.kill()
        child.join()
    assert identifier not in multiproc.live_processes(path)


def test_metrics_reset_refuses_while_a_platform_process_runs(tmp_path, settings):
    path = tmp_path / "prom"
    settings.PROMETHEUS_MULTIPROC_DIR = path
    probe = start_probe(path, "v2g_test_probe")
    try:
        with pytest.raises(CommandError, match=multiproc.process_identifier(probe.pid)):
            call_command("metrics_reset")
        call_command("metrics_reset", if_idle=True)  # an entrypoint run again: leaves it, exit 0
        assert {p.name for p in path.glob("*.db")} >= {
            f"counter_{multiproc.process_identifier(probe.pid)}.db"
        }
    finally:
        probe.stdin.close()
        probe.wait(10)
    assert list(path.glob("counter_*.db"))  # a counter outlives its process...
    call_command("metrics_reset")  # ...until the next platform start
    assert list(path.iterdir()) == []


def test_metrics_reset_force_wipes_under_a_running_process(tmp_path, settings):
    path = tmp_path / "prom"
    settings.PROMETHEUS_MULTIPROC_DIR = path
    probe = start_probe(path, "v2g_test_probe")
    try:
        call_command("metrics_reset", force=True)
        assert list(path.glob("*.db")) == []
    finally:
        probe.stdin.close()
        probe.wait(10)


def test_the_demo_wipe_leaves_a_directory_other_processes_write_to(tmp_path):
    from v2g_project.metrics import multiproc_dir_wipe

    path = tmp_path / "prom"
    probe = start_probe(path, "v2g_test_probe")
    try:
        assert multiproc_dir_wipe(path) is False  # e.g. a test session's worker and bridge
        assert list(path.glob("counter_*.db"))
    finally:
        probe.stdin.close()
        probe.wait(10)
    assert multiproc_dir_wipe(path) is True
    assert list(path.iterdir()) == []


def test_a_short_process_leaves_no_idle_files(tmp_path):
    path = tmp_path / "prom"
    env = subprocess_env(K_METRICS__MULTIPROC_DIR=str(path))
    idle = "import django; django.setup(); import dispatch.metrics, telemetry.metrics"
    subprocess.run([sys.executable, "-c", idle], cwd=ROOT, env=env, check=True)
    assert list(path.iterdir()) == []  # declared metrics at 0 and the lock: gone
    busy = idle + "; dispatch.metrics.PUBLISH_SUCCESS.inc()"
    subprocess.run([sys.executable, "-c", busy], cwd=ROOT, env=env, check=True)
    assert [p.name.split("_")[0] for p in path.iterdir()] == ["counter"]  # the count stays


@pytest.mark.django_db  # the KPI gauges of /metrics read the database
@pytest.mark.parametrize("end", ["killed", "exits"])
def test_a_dead_process_loses_its_live_gauges_not_its_counters(client, end):
    name = f"v2g_test_{secrets.token_hex(4)}"
    probe = start_probe(None, name)  # the directory of this test run, read by client's /metrics
    try:
        assert metric_value(client, f"{name}_live") == 5
        assert metric_value(client, f"{name}_events_total") == 3
    finally:
        if end == "killed":
            probe.send_signal(signal.SIGKILL)  # no exit hook runs: the scrape sees its free lock
        else:
            probe.stdin.close()  # a normal exit
        probe.wait(10)
    text = client.get("/metrics").content.decode()
    assert f"{name}_live" not in text
    assert metric_value(client, f"{name}_events_total") == 3


# --- Celery queue depth ----------------------------------------------------------------


@pytest.mark.services
@pytest.mark.django_db
def test_queue_depth_counts_the_waiting_messages_of_each_queue(client, monkeypatch):
    from v2g_project.celery import app

    queue = f"metrics-depth-{secrets.token_hex(4)}"
    monkeypatch.setattr(celery_metrics, "queue_names", lambda: [queue])
    try:
        for _ in range(3):
            app.send_task("tests.metrics.ok", queue=queue)
        app.send_task("tests.metrics.ok", queue=queue, priority=9)  # kombu's list "<queue>\x06\x169"
        assert metric_value(client, "celery_queue_depth", queue=queue) == 4
        assert metric_value(client, "celery_broker_up") == 1
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
    assert metric_value(client, "celery_queue_depth", queue=queue) == 0


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.django_db
@pytest.mark.parametrize("down", ["refused", "silent"])
def test_a_down_broker_never_breaks_metrics(client, settings, silent_server, down):
    host = f"127.0.0.1:{free_port()}" if down == "refused" else silent_server
    settings.CELERY_BROKER_URL = f"redis://:pa55word@{host}/0"
    started = time.monotonic()
    response = client.get("/metrics")
    assert time.monotonic() - started < 2  # 0.5 s timeout, no retry
    assert response.status_code == 200
    text = response.content.decode()
    assert "celery_broker_up 0.0" in text
    assert "celery_queue_depth{" not in text
    assert "mqtt_publish_success_total" in text  # everything else is still served
    assert "pa55word" not in text


@pytest.mark.django_db
def test_queue_depth_of_the_embedded_filesystem_transport(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path)}
    for name in ("1_a.celery.msg", "2_b.celery.msg", "3_c.other.msg"):
        (tmp_path / name).write_text("{}")
    wait_for(lambda: metric_value(client, "celery_queue_depth", queue="celery") == 2, 5, "the depth")
    assert metric_value(client, "celery_broker_up") == 1
