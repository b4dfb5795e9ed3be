"""Health checks of the processes without an HTTP port, as docker-compose runs
them: the Celery worker answers a ping addressed to its own node, Beat and the
MQTT bridge keep a heartbeat file fresh (``python -m v2g_project.heartbeat``).

The commands are read from docker-compose.yml, so what is tested is what the
containers run (with ``$$`` unescaped as compose does)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from tests.conftest import (
    ROOT,
    bridge_session_clear,
    database_url,
    queue_env,
    stop_process,
    subprocess_env,
    wait_for,
)

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_healthcheck(service: str) -> str:
    test = COMPOSE["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    return test[1].replace("$$", "$")  # compose's escape for a literal $


def heartbeat(path: Path, max_age_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "v2g_project.heartbeat", str(path), "--max-age", str(max_age_s)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


# --- the heartbeat checker ---------------------------------------------------------


def test_heartbeat_check_missing_fresh_and_stale(tmp_path):
    path = tmp_path / "run" / "x.alive"
    missing = heartbeat(path, 60)
    assert missing.returncode == 1 and "no heartbeat" in missing.stdout

    from v2g_project import heartbeat as hb

    hb.touch(path)
    assert heartbeat(path, 60).returncode == 0

    old = time.time() - 120
    os.utime(path, (old, old))
    stale = heartbeat(path, 60)
    assert stale.returncode == 1 and "stale heartbeat" in stale.stdout and "120 s ago" in stale.stdout


def test_heartbeat_check_loads_neither_django_nor_prometheus():
    """A compose health check runs every few seconds: it must stay cheap and must
    not leave Prometheus multiprocess files behind (a Django start does)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy; sys.argv = ['x', '/nonexistent', '--max-age', '1']\n"
            "try:\n    runpy.run_module('v2g_project.heartbeat', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'prometheus_client')))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.stdout.strip().endswith("[]"), probe.stdout + probe.stderr


def test_compose_beat_and_bridge_checks_read_the_files_the_processes_write():
    assert "v2g_project.heartbeat var/run/beat.alive" in compose_healthcheck("beat")
    assert "v2g_project.heartbeat var/run/mqtt_bridge.alive" in compose_healthcheck("bridge")
    from v2g_project.config import Config

    assert Config().celery.beat_heartbeat_file == "var/run/beat.alive"
    bridge_cmd = COMPOSE["services"]["bridge"]["command"]
    assert "--heartbeat-file" not in bridge_cmd  # the default, var/run/mqtt_bridge.alive


# --- real processes ------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.django_db  # settings name the test database from here on
def test_compose_worker_healthcheck_pings_only_its_own_worker(tmp_path):
    node_host = f"v2g-health-{secrets.token_hex(3)}"
    queue = f"health-{secrets.token_hex(3)}"
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "v2g_project", "worker", "--pool", "solo",
             "--queues", queue, "--hostname", f"celery@{node_host}", "--without-gossip",
             "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    command = compose_healthcheck("worker")

    def check(hostname: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "-c", command],
            cwd=ROOT,
            # The image has celery on PATH; here it is next to this interpreter.
            env={**env, "HOSTNAME": hostname, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        wait_for(lambda: "ready." in log_path.read_text() or worker.poll() is not None, 60, "the worker")
        assert worker.poll() is None, log_path.read_text()
        ok = wait_for(lambda: (r := check(node_host)).returncode == 0 and r, 30, "the worker to answer")
        assert f"celery@{node_host}" in ok.stdout and "pong" in ok.stdout
        # Another container's name: no answer, the check fails (and does not hang).
        started = time.monotonic()
        other = check(f"not-{node_host}")
        assert other.returncode != 0, other.stdout
        assert time.monotonic() - started < 30
    finally:
        stop_process(worker)


@pytest.mark.services
@pytest.mark.django_db  # settings name the test database from here on
def test_beat_keeps_its_heartbeat_fresh_while_it_runs(tmp_path):
    alive = tmp_path / "beat.alive"
    assert heartbeat(alive, 60).returncode == 1
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        # Whatever falls due goes to a queue no worker of the test session reads.
        **queue_env(f"beat-health-{secrets.token_hex(3)}"),
        K_CELERY__BEAT_HEARTBEAT_FILE=str(alive),
    )
    log_path = tmp_path / "beat.log"
    with open(log_path, "wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "v2g_project", "beat", "--loglevel", "INFO",
             "--schedule", str(tmp_path / "beat-schedule")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: heartbeat(alive, 10).returncode == 0 or beat.poll() is not None, 60, "Beat's heartbeat"
        )
        assert beat.poll() is None, log_path.read_text()
        first = alive.stat().st_mtime
        # Beat ticks at most 5 s apart: the file is touched again.
        wait_for(lambda: alive.stat().st_mtime > first, 15, "a second Beat tick")
    finally:
        beat.send_signal(signal.SIGTERM)
        stop_process(beat)
    # Stopped: the heartbeat goes stale.
    wait_for(lambda: heartbeat(alive, 2).returncode == 1, 15, "the heartbeat to go stale")


@pytest.mark.services
@pytest.mark.django_db  # settings name the test database from here on
def test_bridge_keeps_its_heartbeat_fresh_while_connected(tmp_path):
    alive = tmp_path / "bridge.alive"
    bridge_id = f"v2g-test-bridge-{secrets.token_hex(4)}"  # its own broker session, dropped after
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]), K_MQTT__BRIDGE_CLIENT_ID=bridge_id
    )
    log_path = tmp_path / "bridge.log"
    with open(log_path, "wb") as log:
        bridge = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge", "--heartbeat-file", str(alive)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: heartbeat(alive, 10).returncode == 0 or bridge.poll() is not None,
            60,
            "the bridge's heartbeat",
        )
        assert bridge.poll() is None, log_path.read_text()
        first = alive.stat().st_mtime
        wait_for(lambda: alive.stat().st_mtime > first, 15, "a second bridge heartbeat")
    finally:
        stop_process(bridge)
        bridge_session_clear(bridge_id)
    wait_for(lambda: heartbeat(alive, 2).returncode == 1, 15, "the heartbeat to go stale")


@pytest.mark.services
def test_a_bridge_that_cannot_reach_its_broker_never_reports_healthy(tmp_path):
    from tests.conftest import free_port

    alive = tmp_path / "bridge.alive"
    result = subprocess.run(
        [sys.executable, "manage.py", "mqtt_bridge", "--heartbeat-file", str(alive)],
        cwd=ROOT,
        env=subprocess_env(K_MQTT__URL=f"tcp://127.0.0.1:{free_port()}", K_MQTT__CONNECT_TIMEOUT_S="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert not alive.exists()


@pytest.mark.services
@pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs the mosquitto binary")
def test_compose_mosquitto_healthcheck_against_the_production_broker_config(tmp_path):
    """deploy/mosquitto/mosquitto.prod.conf on a free port, the compose check with
    its paths and port moved there: up with the platform's password, down with a wrong one."""
    from tests.integration.test_mqtt_secure import PASSWORDS, SecureBroker

    broker = SecureBroker(tmp_path)
    broker.start()
    command = compose_healthcheck("mosquitto")
    command = command.replace("/mosquitto/certs/", f"{broker.certs}/").replace(
        "-p 8883", f"-p {broker.tls_port}"
    )

    def check(password: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "-c", command],
            env={**os.environ, "V2G_MQTT_PASSWORD": password},
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        ok = check(PASSWORDS["v2g-platform"])
        assert ok.returncode == 0, ok.stdout + ok.stderr
        refused = check("not-the-password")
        assert refused.returncode != 0
    finally:
        broker.stop()
    assert check(PASSWORDS["v2g-platform"]).returncode != 0  # broker down
