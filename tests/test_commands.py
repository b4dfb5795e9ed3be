"""The project's commands, run as a user would run them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, subprocess_env, wait_for


def manage(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"K_TELEMETRY__MODE": "pusj"}, "telemetry.mode (from environment K_TELEMETRY__MODE)"),
        ({"K_TELEMETRY__MODEE": "pull"}, "K_TELEMETRY__MODEE: unknown key 'MODEE' in telemetry"),
        ({"K_MQTT__QOS__COMMAND": "7"}, "mqtt.qos.command (from environment K_MQTT__QOS__COMMAND)"),
        ({"K_SENTRY__TRACES_SAMPLE_RATE": "2"}, "sentry.traces_sample_rate"),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_key(env, expected):
    result = manage("check", **env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_given_with_dash_c_is_used_and_validated(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("telemetry:\n  mode: pull\n  interval_seconds: 30\n")
    result = manage(
        "-c", str(good), "shell", "-c", "from django.conf import settings; print(settings.V2G.telemetry.mode)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "pull"

    bad = tmp_path / "bad.yaml"
    bad.write_text("telemetry:\n  interval_seconds: soon\n")
    result = manage("--config", str(bad), "check")
    assert result.returncode == 2
    assert f"telemetry.interval_seconds (in {bad})" in result.stderr

    result = manage("-c", str(tmp_path / "missing.yaml"), "check")
    assert result.returncode != 0
    assert "missing.yaml (from -c) does not exist" in result.stderr


def test_config_file_from_environment_variable(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("scheduler:\n  slot_duration_minutes: 30\n")
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.V2G.scheduler.slot_duration_minutes)",
        V2G_CONFIG=str(path),
    )
    assert result.stdout.strip().splitlines()[-1] == "30", result.stderr


def test_migrations_are_complete():
    result = manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sqlite_is_the_embedded_default(tmp_path):
    db = tmp_path / "embedded.sqlite3"
    result = manage("migrate", "--noinput", DATABASE_URL="", K_DATABASE__SQLITE_PATH=str(db))
    assert result.returncode == 0, result.stderr
    assert db.exists() and db.stat().st_size > 0


@pytest.mark.services
@pytest.mark.e2e
def test_demo_runs_the_system_on_embedded_defaults_and_stops_cleanly(tmp_path):
    """No Redis and no MQTT broker reachable: the demo runs on the filesystem
    transport and an embedded broker; a real worker answers, simulated vehicles
    acknowledge a demo signal, the web server serves /readyz; everything stops."""
    port = free_port()
    env = subprocess_env(
        DATABASE_URL="",
        CELERY_BROKER_URL="",
        K_DATABASE__SQLITE_PATH=str(tmp_path / "demo.sqlite3"),
        K_CELERY__BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        K_CELERY__FILESYSTEM_DIR=str(tmp_path / "celery"),
        K_MQTT__URL=f"tcp://127.0.0.1:{free_port()}",
    )
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--port", str(port), "--vehicles", "20", "--signal-every", "8"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    summary = re.compile(
        r"dispatch (completed|partial): FCR [+-][\d.]+ kW, \d+ vehicles, [1-9]\d*/\d+ commands acked"
    )
    try:
        wait_for(lambda: "Ctrl-C stops everything" in "".join(lines), 120, "the demo to start")
        output = "".join(lines)
        assert "using the embedded filesystem transport" in output
        assert "starting an embedded one" in output and "embedded MQTT broker (amqtt)" in output
        assert re.search(r"ok\s+worker\s+\S+ pid \d+ answered", output), output
        assert "login admin / v2g-demo" in output

        def readyz():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                    return json.load(response)
            except OSError:
                return None

        body = wait_for(readyz, 30, "the demo web server")
        assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
        # The API token it prints opens the API.
        token = re.search(r"Authorization: Bearer (v2g_\S+)'", output).group(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/fleets/", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert [f["id"] for f in json.load(response)["results"]] == ["demo"]
        # Simulated vehicles acknowledge a demo signal, end to end.
        try:
            wait_for(lambda: summary.search("".join(lines)), 90, "a demo dispatch to finish")
        except AssertionError as exc:  # say why: the console and the tail of each process log
            logs = sorted((ROOT / "var" / "log").glob("*.log"))
            tails = "".join(f"\n--- {p.name}\n" + "".join(p.read_text().splitlines(True)[-15:]) for p in logs)
            raise AssertionError(f"{exc}\n--- demo console\n{''.join(lines)[-3000:]}{tails}") from None
        demo.send_signal(signal.SIGINT)  # Ctrl-C
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


def test_signal_submit_from_the_command_line(tmp_path):
    env = {"DATABASE_URL": "", "K_DATABASE__SQLITE_PATH": str(tmp_path / "cli.sqlite3")}
    assert manage("migrate", "--noinput", **env).returncode == 0
    bad = manage(
        "signal_submit", "--type", "FCR", "--power-kw", "10", "--duration-s", "60", "--fleet", "nope", **env
    )
    assert bad.returncode == 1 and "fleet_id: no fleet 'nope'" in bad.stderr
    bad = manage("signal_submit", "--type", "XYZ", "--power-kw", "10", "--duration-s", "60", **env)
    assert bad.returncode == 2 and "invalid choice: 'XYZ'" in bad.stderr
    good = manage("signal_submit", "--type", "mFRR", "--power-kw", "-10", "--duration-s", "60", **env)
    assert good.returncode == 0, good.stderr
    assert re.search(r"^signal [0-9a-f-]{36}\ndispatch [0-9a-f-]{36}$", good.stdout.strip())
