"""Property-based fuzzing of the HTTP API against its own OpenAPI schema.

Schemathesis reads /api/schema/ from a real gunicorn server (debug off, as in
production) on the test database and sends every operation generated
requests: valid ones and invalid ones (wrong types, boundary and
out-of-range numbers, odd characters, missing fields, undeclared methods),
then follows the schema's links (a signal, then its dispatch). Every response
must be no 5xx, a documented status code and content type, and a body that
matches the documented schema; each check schemathesis has is on.

Bounded and repeatable: derandomized generation, ``V2G_FUZZ_MAX_EXAMPLES``
per operation (default 20, 3 times that for operations with a body; about
35 s in all; raise it for a deeper run), and ``V2G_FUZZ_ARGS`` for more
schemathesis options (e.g. ``--include-path=/api/signals/``). A failure
prints schemathesis's report with a curl command reproducing each problem,
and the server's log with the tracebacks of its 5xx.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from dispatch.log import dispatch_log_write
from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from fleet.models import ApiToken, Fleet, Site, Vehicle
from telemetry.models import VehicleState
from tests.api_routes import operations
from tests.conftest import ROOT, database_url, free_port, stop_process, subprocess_env, wait_for

# Per operation, in the fuzzing phase; operations with a request body get 3 times more.
FUZZ_MAX_EXAMPLES = int(os.environ.get("V2G_FUZZ_MAX_EXAMPLES", "20"))

# Written to schemathesis.toml for the run. Every check is on (schemathesis's
# default) but max_response_time, which needs a figure; timing is bench/'s job.
CONFIG = r"""
[generation]
deterministic = true
max-examples = {max_examples}
# The fuzzer authenticates with its own header; generated Cookie and
# Authorization values would test gunicorn's header parsing, not the API
# (the ignored_auth check still sends bad credentials).
with-security-parameters = false

# Strings that break things in practice, mixed into every generated string:
# NUL (PostgreSQL refuses it in text), a path separator, dots (URL routing),
# astral and right-to-left characters, quotes, percent and brace formats.
[dictionaries.hostile]
values = ["a\u0000b", "\u0000", "a/b", "car.1", "..", "\U0001F697", "\u202eevil", "O'Brien", "%s%n{{0}}", "\\", " "]

# Times also get the calendar's first and last instants: arithmetic on them
# (an end = start + duration, a conversion to UTC) overflows.
[dictionaries.calendar-edges]
values = ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]

[parameters]
"body.start_at" = {{ dictionary = "calendar-edges", probability = 0.3 }}
"body.valid_until" = {{ dictionary = "calendar-edges", probability = 0.3 }}
"body.departure_at" = {{ dictionary = "calendar-edges", probability = 0.3 }}
"query.start" = {{ dictionary = "calendar-edges", probability = 0.3 }}
"query.end" = {{ dictionary = "calendar-edges", probability = 0.3 }}

[generation.dictionaries.string]
dictionary = "hostile"
probability = 0.2

[checks.positive_data_acceptance]
# A schema cannot say "this fleet must exist", "this id must be new", "valid_until
# must be in the future" or "only a cursor we issued": the API refuses such
# requests with a 400 naming the field (SPEC 14). Anything else still fails.
expected-statuses = ["2xx", "3xx", 400, 401, 403, 404, 409, 429]

[[operations]]
include-method = ["POST", "PATCH"]
# Bodies have many fields whose combinations matter: more examples there.
generation.max-examples = {body_max_examples}
# DRF serializers coerce JSON bodies by design: 0/1 for booleans, a number for
# a string, "" for null on a nullable relation. Request bodies are still fuzzed
# for 5xx and response conformance; query parameters keep the strict check.
checks.negative_data_rejection.enabled = false

[[operations]]
# A random UUID is a 404: follow the seeded dispatch, to check what a real one looks like.
include-operation-id = "dispatches_retrieve"
parameters = {{ id = "{dispatch_id}" }}
"""


@pytest.fixture
def registry(transactional_db) -> dict:
    """Something to find, committed so that the server sees it: a fleet, a site,
    vehicles with states, and a signal dispatched in two rounds (acked,
    timed-out and published commands) with its dispatch log."""
    now = timezone.now()
    fleet = Fleet.objects.create(id="fuzz-fleet", name="Fuzz fleet")
    site = Site.objects.create(fleet=fleet, name="depot")
    vehicles = [
        Vehicle.objects.create(
            id=f"fz-{n}", fleet=fleet, site=site, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11
        )
        for n in range(3)
    ]
    for n, vehicle in enumerate(vehicles[:2]):
        VehicleState.objects.create(
            vehicle=vehicle, soc=0.5 + n / 10, plugged_in=True, reported_at=now, received_at=now
        )
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=20, start_at=now, duration_s=600, valid_until=now + timedelta(minutes=10)
    )
    first = Dispatch.objects.create(
        signal=signal, round=0, strategy="greedy", target_kw=20, allocated_kw=20, acknowledged_kw=11,
        status=DispatchStatus.PARTIAL, deadline_at=now, finished_at=now,
    )  # fmt: skip
    second = Dispatch.objects.create(
        signal=signal, round=1, strategy="greedy", target_kw=9, allocated_kw=9, status=DispatchStatus.COLLECTING,
    )  # fmt: skip
    commands = [
        Command.objects.create(
            dispatch=first, vehicle=vehicles[0], power_kw=11, allocated_kw=11, status=CommandStatus.ACKED,
            attempts=1, valid_until=signal.valid_until, published_at=now, acked_at=now, latency_s=0.2,
        ),
        Command.objects.create(
            dispatch=first, vehicle=vehicles[1], power_kw=9, allocated_kw=9, status=CommandStatus.TIMED_OUT,
            attempts=1, valid_until=signal.valid_until, published_at=now, reason="no ack within 2 s",
        ),
        Command.objects.create(
            dispatch=second, vehicle=vehicles[2], power_kw=9, allocated_kw=9, status=CommandStatus.PUBLISHED,
            attempts=1, valid_until=signal.valid_until, published_at=now,
        ),
    ]  # fmt: skip
    logged = [
        dict(
            at=now,
            dispatch_id=c.dispatch_id,
            signal_id=signal.id,
            signal_type="FCR",
            target_kw=20.0,
            vehicle_id=c.vehicle_id,
            command_id=c.id,
            allocated_kw=c.allocated_kw,
            setpoint_kw=c.power_kw,
            status=c.status,
            acknowledged=c.status == CommandStatus.ACKED,
            ack_latency_s=c.latency_s,
            fallback_round=0,
            score=None,
        )
        for c in commands[:2]
    ]
    dispatch_log_write(logged)
    return {"fleet": fleet, "dispatch": first}


@pytest.fixture
def fuzz_credentials(transactional_db) -> dict[str, str]:
    """The headers that authenticate the fuzzer: an API token for every fleet,
    as an integrator's. Override this fixture to fuzz with other credentials."""
    token = ApiToken(name="fuzzer", all_fleets=True)
    plaintext = token.new_key()
    token.save()
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def api_server(transactional_db, tmp_path) -> Iterator[str]:
    """gunicorn serving the project on the test database; its base URL.
    Accepted signals are queued on a broker of files of its own (no worker
    takes them), and throttling is out of the way of a thousand requests."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    environment = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        CELERY_BROKER_URL="filesystem://",
        K_CELERY__FILESYSTEM_DIR=str(tmp_path / "celery"),
        K_WEB__DEBUG="false",
        K_WEB__SECRET_KEY="fuzz-test-only-not-a-secret-0123456789-abcdefghijklmnop",
        K_WEB__SSL_REDIRECT="false",  # plain HTTP on loopback, no TLS proxy in front
        K_API__THROTTLE_RATE="1000000/s",
    )
    command = [sys.executable, "-m", "gunicorn", "v2g_project.wsgi:application"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*command, f"--bind=127.0.0.1:{port}", "--workers=1", "--timeout=60", "--no-control-socket"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/api/schema/") or proc.poll() is not None, 60, "gunicorn to serve")
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        yield url
    finally:
        stop_process(proc)
    # Server errors are logged with their traceback: show them with the report.
    print(log_path.read_text()[-20000:])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_api_fuzz(api_server, fuzz_credentials, registry, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        CONFIG.format(
            max_examples=FUZZ_MAX_EXAMPLES,
            body_max_examples=3 * FUZZ_MAX_EXAMPLES,
            dispatch_id=registry["dispatch"].id,
        )
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        f"--config-file={config}",
        "run",
        f"{api_server}/api/schema/",
        "--workers=1",
        "--no-color",
        f"--report-dir={tmp_path}",
        *(f"--header={name}: {value}" for name, value in fuzz_credentials.items()),
        *shlex.split(os.environ.get("V2G_FUZZ_ARGS", "")),
    ]
    started = time.monotonic()
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    print(run.stdout, f"\nschemathesis ran {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stdout + run.stderr
    # Every operation of the schema was fuzzed, none filtered out or skipped (the
    # schema holds every /api/ route: tests/test_api_bad_input.py).
    count = len(operations())
    if not os.environ.get("V2G_FUZZ_ARGS"):
        assert f"Selected: {count}/{count}" in run.stdout and f"Tested: {count}\n" in run.stdout, run.stdout
