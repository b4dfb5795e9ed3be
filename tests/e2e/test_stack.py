"""End to end: the whole stack as separate processes on this machine (web,
Celery worker, Beat, MQTT bridge, the fleet simulator) against the real Redis,
Mosquitto and database; signals go in through the HTTP API."""

from __future__ import annotations

import http.cookiejar
import json
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from dispatch.models import Command, CommandStatus, DispatchLogEntry
from fleet.models import Fleet, Site, Vehicle
from telemetry.models import VehicleState
from tests.conftest import (
    ROOT,
    TEST_PROCESS_ENV,
    database_url,
    free_port,
    stop_process,
    subprocess_env,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

COUNT = 30


class Api:
    """A logged-in HTTP session on the running web server (session auth + CSRF)."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.opener.open(f"{base}/api-auth/login/", timeout=10).read()
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": self._csrf(), "next": "/api/"}
        ).encode()
        request = urllib.request.Request(f"{base}/api-auth/login/", data=form, headers={"Referer": base})
        self.opener.open(request, timeout=10).read()

    def _csrf(self) -> str:
        return next(cookie.value for cookie in self.jar if cookie.name == "csrftoken")

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(f"{self.base}{path}", timeout=10) as response:
            return response.status, response.read().decode()

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.base}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-CSRFToken": self._csrf(), "Referer": self.base},
        )  # fmt: skip
        with self.opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())


@pytest.fixture
def stack(celery_worker, mqtt_bridge, tmp_path, django_user_model):
    """Web and Beat on the test database, plus a simulated fleet of COUNT vehicles."""
    prefix = f"e2e{secrets.token_hex(2)}-"
    fleet = Fleet.objects.create(id=prefix.rstrip("-"), name="E2E fleet")
    site = Site.objects.create(fleet=fleet, name="Depot")
    for n in range(COUNT):
        Vehicle.objects.create(
            id=f"{prefix}{n:04d}",
            fleet=fleet,
            site=site,
            battery_kwh=60,
            max_charge_kw=11,
            max_discharge_kw=11,
        )
    django_user_model.objects.create_superuser("e2e", "e2e@localhost", "e2e-Passw0rd")
    env = subprocess_env(DATABASE_URL=database_url(settings.DATABASES["default"]), **TEST_PROCESS_ENV)
    port = free_port()
    commands = {
        "web": [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        "beat": [sys.executable, "-m", "celery", "-A", "v2g_project", "beat", "--loglevel", "INFO",
                 "--schedule", str(tmp_path / "beat-schedule")],
        "simulator": [sys.executable, "-m", "simulator", "--count", str(COUNT), "--prefix", prefix,
                      "--url", settings.V2G.mqtt.url, "--seed", "7", "--drop-rate", "0.2",
                      "--profiles", "always=1", "--v2g-share", "1",
                      "--telemetry-interval-s", "2", "--status-interval-s", "5"],
    }  # fmt: skip
    procs = {}
    for name, command in commands.items():
        with open(tmp_path / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        def web_up():
            try:
                return urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(web_up, 60, "the web server")
        yield {"api": Api(base, "e2e", "e2e-Passw0rd"), "base": base, "fleet": fleet, "prefix": prefix,
               "logs": tmp_path, "procs": procs}  # fmt: skip
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} died: {(tmp_path / f'{name}.log').read_text()[-2000:]}"
    finally:
        for proc in procs.values():
            stop_process(proc)


def test_signals_through_the_api_reach_simulated_vehicles_and_come_back_acknowledged(stack):
    api, fleet = stack["api"], stack["fleet"]
    # Telemetry: every simulated vehicle's pushed state is recorded by the bridge.
    wait_for(lambda: VehicleState.objects.filter(vehicle__fleet=fleet).count() == COUNT, 30, "telemetry")

    status, created = api.post(
        "/api/signals/", {"signal_type": "FCR", "power_kw": 60, "duration_s": 300, "fleet_id": fleet.id}
    )
    assert status == 201

    def finished():
        _code, body = api.get(f"/api/dispatches/{created['dispatch_id']}/")
        detail = json.loads(body)
        return detail if detail["status"] != "in_progress" else None

    detail = wait_for(finished, 60, "the dispatch to finish")
    assert detail["status"] in ("completed", "partial")
    assert detail["acknowledged_kw"] > 0
    first = Command.objects.filter(dispatch_id=created["dispatch_id"])
    assert first.count() > 0
    assert not first.filter(status__in=(CommandStatus.PENDING, CommandStatus.PUBLISHED)).exists()
    # The simulator drops 20 % of acks (seeded): those time out and their power is re-dispatched.
    assert first.filter(status=CommandStatus.TIMED_OUT).exists()
    assert len(detail["rounds"]) >= 2 and detail["rounds"][1]["allocated_kw"] > 0
    assert DispatchLogEntry.objects.filter(signal_id=created["signal_id"]).count() == len(detail["commands"])

    # Metrics produced by the worker processes, scraped from the web server.
    _code, text = stack["api"].get("/metrics")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("vehicles_dispatched_total", (("signal_type", "FCR"),))] >= first.count()
    assert samples[("dispatch_execution_latency_seconds_count", (("signal_type", "FCR"),))] > 0
    assert "mqtt_publish_success_total" in {name for name, _labels in samples}
