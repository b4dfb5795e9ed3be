"""Sentry: what is sent, and that nothing is when the DSN is empty.

The end-to-end tests run real processes (a Celery worker, Celery Beat) whose
SDK reports to a fake Sentry on loopback that keeps every envelope posted to
it, exactly as it arrived."""

from __future__ import annotations

import gzip
import json
import re
import secrets
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.utils import timezone

from tests.conftest import ROOT, start_worker, stop_process, subprocess_env, worker_ready
from v2g_project.config import Config
from v2g_project.logcontext import log_context
from v2g_project.observability import FILTERED, Scrubber, config_secrets

# --- a fake Sentry ------------------------------------------------------------------


@dataclass
class Item:
    envelope: dict  # the envelope's header
    header: dict  # the item's header ("type": "event", "check_in", ...)
    payload: dict | None  # the item, when JSON
    raw: bytes  # the whole envelope as posted (decompressed)


def envelope_parse(raw: bytes) -> list[tuple[dict, bytes]]:
    """The items of an envelope (https://develop.sentry.dev/sdk/envelopes/):
    a header line, then per item a header line and its payload, whose length
    is given by the item header or runs to the end of the line."""
    lines = raw.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    items = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, payload))
    return items


class FakeSentry:
    """An HTTP server taking envelopes at /api/<project>/envelope/."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.raw: list[bytes] = []
        self.requests: list[dict] = []
        self._cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding:
                    self.send_error(415, f"unexpected Content-Encoding {encoding}")
                    return
                if not re.fullmatch(r"/api/\d+/envelope/", self.path):
                    self.send_error(404)
                    return
                fake._received(self.path, dict(self.headers), body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-sentry", daemon=True)
        self._thread.start()

    def dsn(self, key: str, project: int = 1) -> str:
        return f"http://{key}@127.0.0.1:{self.port}/{project}"

    def _received(self, path: str, headers: dict, raw: bytes) -> None:
        envelope_header = json.loads(raw.split(b"\n", 1)[0])
        with self._cond:
            self.requests.append({"path": path, "headers": headers})
            self.raw.append(raw)
            for header, payload in envelope_parse(raw):
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = None
                self.items.append(Item(envelope_header, header, parsed, raw))
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Item]], list[Item]], timeout_s: float, what: str) -> list[Item]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout_s):
                kinds = [(i.header.get("type"), (i.payload or {}).get("monitor_slug")) for i in self.items]
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; got {kinds}")
            return predicate(self.items)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    fake = FakeSentry()
    yield fake
    fake.close()


def events(items: list[Item], **tags: str) -> list[Item]:
    return [
        i
        for i in items
        if i.header.get("type") == "event"
        and all((i.payload.get("tags") or {}).get(k) == v for k, v in tags.items())
    ]


# --- the scrubber (no SDK, no server) ----------------------------------------------------

SECRETS = {
    "db": "db-pass-" + secrets.token_hex(6),
    "mqtt": "mqtt-pass-" + secrets.token_hex(6),
    "token": "static-token-" + secrets.token_hex(8),
    "django": "django-key-" + secrets.token_hex(16),
}


def test_config_secrets_are_every_secret_value_and_url_passwords():
    config = Config.model_validate(
        {
            "database": {"url": f"postgres://v2g:{SECRETS['db']}@db:5432/v2g"},
            "mqtt": {"password": SECRETS["mqtt"]},
            "api": {"static_token": SECRETS["token"]},
            "celery": {"broker_url": "redis://:broker-pass-123@redis:6379/0"},
            "sentry": {"dsn": "https://abc123@o1.ingest.sentry.io/42"},
        }
    )
    found = config_secrets(config)
    assert SECRETS["db"] in found and f"postgres://v2g:{SECRETS['db']}@db:5432/v2g" in found
    assert {SECRETS["mqtt"], SECRETS["token"], "broker-pass-123"} <= set(found)
    assert "https://abc123@o1.ingest.sentry.io/42" in found
    assert found == sorted(found, key=len, reverse=True)  # a URL is masked whole, before its password


def test_the_scrubber_removes_credentials_from_every_part_of_an_event():
    scrub = Scrubber([*SECRETS.values(), "v2g"])  # too short to be searched for in text
    event = {
        "message": f"connect to postgres://v2g:{SECRETS['db']}@db/v2g failed",
        "request": {
            "url": "http://web/api/dispatches/",
            "query_string": f"token={SECRETS['token']}&limit=5&api_key=k",
            "headers": {
                "Authorization": f"Bearer {SECRETS['token']}",
                "Cookie": "sessionid=s",
                "Accept": "*/*",
            },
            "cookies": {"sessionid": "s", "csrftoken": "c"},
            "env": {"SERVER_NAME": "web", "DJANGO_SECRET_KEY": SECRETS["django"]},
            "data": {"username": "op", "password": "hunter2-long"},
        },
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"bad password {SECRETS['mqtt']}",
                    "stacktrace": {
                        "frames": [
                            {"function": "f", "module": "v2g_project.mqtt", "vars": {"cfg": SECRETS["mqtt"]}}
                        ]
                    },
                }
            ]
        },
        "breadcrumbs": {"values": [{"message": f"secret key is {SECRETS['django']}"}]},
        "extra": {"mqtt_password": "x", "count": 3},
        "modules": {"authlib": "1.9.9", "django": "5.2.19"},
    }
    cleaned = scrub(event, {})
    text = json.dumps(cleaned)
    for secret in SECRETS.values():
        assert secret not in text
    request = cleaned["request"]
    assert request["query_string"] == f"token={FILTERED}&limit=5&api_key={FILTERED}"
    assert request["headers"] == {"Authorization": FILTERED, "Cookie": FILTERED, "Accept": "*/*"}
    assert request["cookies"] == FILTERED
    assert request["env"] == {"SERVER_NAME": "web", "DJANGO_SECRET_KEY": FILTERED}
    assert request["data"] == {"username": "op", "password": FILTERED}
    assert cleaned["extra"] == {"mqtt_password": FILTERED, "count": 3}
    assert cleaned["modules"] == {"authlib": "1.9.9", "django": "5.2.19"}  # package names, not keys
    assert cleaned["message"] == f"connect to postgres://v2g:{FILTERED}@db/v2g failed"
    assert cleaned["exception"]["values"][0]["stacktrace"]["frames"][0]["module"] == "v2g_project.mqtt"


def test_events_are_tagged_with_the_context_the_exception_was_raised_in():
    scrub = Scrubber()
    try:
        with log_context(dispatch_id="d-1", signal_type="aFRR"), log_context(vehicle_id="ev-4"):
            raise RuntimeError("solver failed")
    except RuntimeError as exc:
        caught = exc
    event = scrub({"tags": {"celery_task": "x"}}, {"exc_info": (RuntimeError, caught, None)})
    assert event["tags"] == {
        "dispatch_id": "d-1",
        "signal_type": "aFRR",
        "vehicle_id": "ev-4",
        "celery_task": "x",
    }
    # An ERROR line reported by the logging integration: the fields of its record.
    record = SimpleNamespace(dispatch_id="d-2", vehicle_id=None, signal_type="FCR")
    assert scrub({}, {"log_record": record})["tags"] == {"dispatch_id": "d-2", "signal_type": "FCR"}
    # Captured inside a block: the current context.
    with log_context(dispatch_id="d-3"):
        assert scrub({}, {})["tags"] == {"dispatch_id": "d-3"}
    # Cron check-ins keep their own schema.
    with log_context(dispatch_id="d-3"):
        assert "tags" not in scrub({"type": "check_in", "monitor_slug": "m"}, {})


# --- an empty DSN: nothing at all -------------------------------------------------------

PROBE = """
import json, logging, sys, threading
import django
django.setup()
from v2g_project.celery import app  # the worker's and Beat's app, with its integrations if any
app.loader.import_default_modules()  # and every task module, as a worker imports them
from v2g_project.logcontext import log_context
with log_context(dispatch_id="d-1"):
    logging.getLogger("dispatch.services").error("an error that Sentry would report")
import celery.beat
loaded = "sentry_sdk" in sys.modules
import sentry_sdk
sentry_sdk.flush(timeout=2)
print(json.dumps({
    "loaded_by_us": loaded,
    "active": sentry_sdk.get_client().is_active(),
    "transport": sentry_sdk.get_client().transport is not None,
    "threads": sorted(t.name for t in threading.enumerate()),
    "beat_patched": "sentry" in celery.beat.Scheduler.apply_entry.__name__,
    "tasks_loaded": "dispatch.tasks" in sys.modules,
}))
"""


def probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_empty_dsn_disables_sentry_completely(fake_sentry):
    # SENTRY_DSN is the SDK's own variable: the configuration's empty DSN wins over it.
    off = probe(K_SENTRY__DSN="", SENTRY_DSN=fake_sentry.dsn("envkey"))
    assert off == {
        "loaded_by_us": False,
        "active": False,
        "transport": False,
        "threads": ["MainThread"],
        "beat_patched": False,
        "tasks_loaded": True,
    }
    assert fake_sentry.items == []
    # The same process with a DSN: the SDK, its thread, Beat patched, the error reported.
    on = probe(K_SENTRY__DSN=fake_sentry.dsn("probekey"))
    assert on["loaded_by_us"] and on["active"] and on["transport"] and on["beat_patched"]
    assert any(name.startswith("sentry-sdk") for name in on["threads"])
    (event,) = fake_sentry.wait(lambda items: events(items), 10, "the logged error")
    assert event.payload["logentry"]["message"] == "an error that Sentry would report"
    assert event.payload["tags"]["dispatch_id"] == "d-1"


# --- real processes reporting to the fake Sentry -----------------------------------------

ENVIRONMENT = "sentry-test"
RELEASE = "v2g@11.0.0-test"


def secret_env() -> dict[str, str]:
    """Configured secrets a report must never carry (each long enough to be
    searched for in the envelopes)."""
    return {
        "K_MQTT__USERNAME": "v2g-worker",
        "K_MQTT__PASSWORD": "mqtt-pass-" + secrets.token_hex(8),
        "K_API__STATIC_TOKEN": "static-token-" + secrets.token_hex(8),
        "K_WEB__SECRET_KEY": "django-key-" + secrets.token_hex(16),
        "K_RTE__CLIENT_SECRET": "rte-secret-" + secrets.token_hex(8),
    }


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_failing_dispatch_task_is_reported_with_its_tags_and_no_secret(fake_sentry, tmp_path, monkeypatch):
    """A day-ahead signal whose stored setpoint is corrupt (not a number) makes
    the real dispatch.allocate task fail in a real worker: Sentry gets the
    exception, tagged with the dispatch and its signal type, and nothing secret."""
    from dispatch.models import Dispatch, FlexibilitySignal, SignalSource
    from dispatch.tasks import dispatch_allocate_task
    from fleet.models import Fleet, Vehicle

    db_password = "db-pass-" + secrets.token_hex(8)
    # The test database trusts loopback: the worker connects whatever the password.
    monkeypatch.setitem(settings.DATABASES["default"], "PASSWORD", db_password)
    key = "sentrykey" + secrets.token_hex(8)
    dsn = fake_sentry.dsn(key)
    env = secret_env()
    queue = f"sentry-{secrets.token_hex(3)}"
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        log_path, queue, concurrency=1, K_SENTRY__DSN=dsn, K_SENTRY__ENVIRONMENT=ENVIRONMENT,
        K_SENTRY__RELEASE=RELEASE, K_CELERY__DEFAULT_QUEUE=queue, **env,
    )  # fmt: skip
    try:
        worker_ready(queue, log_path)
        fleet = Fleet.objects.create(id=f"sentry-{secrets.token_hex(3)}", name="Sentry test")
        vehicle = Vehicle.objects.create(
            id=f"{fleet.id}-ev", fleet=fleet, battery_kwh=60.0, max_charge_kw=11.0, max_discharge_kw=10.0
        )
        now = timezone.now()
        signal = FlexibilitySignal.objects.create(
            signal_type="NEBEF", power_kw=7.0, start_at=now, duration_s=900, valid_until=now + timedelta(minutes=15),
            source=SignalSource.PLAN, fleet=fleet, setpoints_kw={vehicle.id: "NaN"},
        )  # fmt: skip
        dispatch = Dispatch.objects.create(signal=signal, round=0, target_kw=7.0)
        dispatch_allocate_task.apply_async(args=[str(dispatch.id)], queue=queue)
        (item,) = fake_sentry.wait(
            lambda items: events(items, dispatch_id=str(dispatch.id)), 30, "the task's exception"
        )
    finally:
        stop_process(worker)
    event = item.payload
    assert event["tags"]["signal_type"] == "NEBEF"
    assert (event["environment"], event["release"]) == (ENVIRONMENT, RELEASE)
    assert event["transaction"] == "dispatch.allocate"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "ValueError" and "must be finite" in exception["value"]
    assert exception["mechanism"]["type"] == "celery" and exception["mechanism"]["handled"] is False
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    # The worker's own log line about the failure names the dispatch too.
    failure = next(line for line in log_path.read_text().splitlines() if "raised unexpected" in line)
    assert f"dispatch={dispatch.id} signal=NEBEF task=dispatch.allocate[" in failure

    # Nothing secret in anything the worker sent (events, sessions, client reports).
    assert fake_sentry.raw
    for raw in fake_sentry.raw:
        text = raw.decode()
        for name, secret in [("DB password", db_password), ("DSN", dsn), *env.items()]:
            assert secret not in text, f"{name} sent to Sentry"
        # The DSN's public key identifies the project (it is in every request's
        # X-Sentry-Auth header by design); it may only appear in the envelope
        # header's trace context, never in what is reported.
        header, _, items = text.partition("\n")
        assert key not in items
        assert json.loads(header).get("trace", {}).get("public_key", key) == key
    assert all(r["path"] == "/api/1/envelope/" for r in fake_sentry.requests)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_beat_jobs_send_cron_check_ins(fake_sentry, tmp_path):
    """A real Celery Beat (the database scheduler) sends a job to a real worker:
    Beat checks in "in_progress" when it sends the job, the worker "ok" when it
    has run, under the job's name, with its schedule."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tests.conftest import database_url

    queue = f"sentry-beat-{secrets.token_hex(3)}"
    env = {"K_SENTRY__DSN": fake_sentry.dsn("beatkey"), "K_SENTRY__ENVIRONMENT": ENVIRONMENT}
    worker_log = tmp_path / "worker.log"
    worker = start_worker(worker_log, queue, concurrency=1, **env)
    beat = None
    try:
        worker_ready(queue, worker_log)
        PeriodicTask.objects.update(enabled=False)  # only ours is due
        # Sentry Crons takes whole minutes; last run long ago: due at once.
        every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
        job = PeriodicTask.objects.create(
            name=f"dispatch-sweep-{secrets.token_hex(3)}", task="dispatch.sweep", interval=every_minute,
            queue=queue, expire_seconds=60, last_run_at=timezone.now() - timedelta(minutes=5),
        )  # fmt: skip
        beat_log = tmp_path / "beat.log"
        with open(beat_log, "ab") as log:
            beat = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "v2g_project", "beat", "--loglevel", "INFO",
                    "--max-interval", "1", "--schedule", str(tmp_path / "beat-schedule"),
                ],
                cwd=ROOT,
                env=subprocess_env(
                    DATABASE_URL=database_url(settings.DATABASES["default"]),
                    CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
                    **env,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

        def check_ins(items: list[Item]) -> list[dict]:
            found = [
                i.payload
                for i in items
                if i.header.get("type") == "check_in" and i.payload["monitor_slug"] == job.name
            ]
            statuses = {c["status"] for c in found}
            return found if {"in_progress", "ok"} <= statuses else []

        try:
            found = fake_sentry.wait(check_ins, 40, f"check-ins of {job.name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nbeat:\n{beat_log.read_text()[-3000:]}") from None
    finally:
        if beat is not None:
            stop_process(beat)
        stop_process(worker)
    started = next(c for c in found if c["status"] == "in_progress")
    done = next(c for c in found if c["status"] == "ok")
    assert done["check_in_id"] == started["check_in_id"]
    assert done["duration"] is not None and done["duration"] >= 0
    assert started["monitor_config"]["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    assert started["environment"] == ENVIRONMENT


REQUEST_PROBE = """
import os, threading, urllib.error, urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server
import django
django.setup()
from django.core.wsgi import get_wsgi_application
import sentry_sdk

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
request = urllib.request.Request(
    f"http://127.0.0.1:{server.server_port}/api/vehicles/?token={os.environ['PROBE_QUERY']}&limit=5",
    headers={
        "Cookie": f"sessionid={os.environ['PROBE_COOKIE']}",
        "Authorization": f"Bearer {os.environ['K_API__STATIC_TOKEN']}",
        "X-Api-Key": os.environ["PROBE_HEADER"],
    },
)
try:
    status = urllib.request.urlopen(request, timeout=20).status
except urllib.error.HTTPError as exc:
    status = exc.code
sentry_sdk.flush(timeout=5)
server.shutdown()
print(status)
"""


def test_a_failing_request_is_reported_without_its_credentials(fake_sentry):
    """The database is down: an API request fails with a 500, reported by the
    Django integration without its headers, cookies or query-string secrets."""
    cookie, query_token, header_key = (
        f"{name}-{secrets.token_hex(8)}" for name in ("cookie", "query", "header")
    )
    env = secret_env()
    db_password = "db-pass-" + secrets.token_hex(8)
    result = subprocess.run(
        # Not in argv: the SDK reports a process's command line (sys.argv).
        [sys.executable, "-c", REQUEST_PROBE],
        cwd=ROOT,
        env=subprocess_env(
            DATABASE_URL=f"postgres://v2g:{db_password}@127.0.0.1:9/v2g",  # nothing listens there
            K_SENTRY__DSN=fake_sentry.dsn("requestkey"),
            K_SENTRY__ENVIRONMENT=ENVIRONMENT,
            PROBE_COOKIE=cookie,
            PROBE_QUERY=query_token,
            PROBE_HEADER=header_key,
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "500", result.stderr[-3000:]
    (item,) = fake_sentry.wait(lambda items: events(items), 10, "the request's exception")
    event = item.payload
    assert event["exception"]["values"][-1]["type"] == "OperationalError"
    request = event["request"]
    assert request["url"].endswith("/api/vehicles/") and request["method"] == "GET"
    assert request["query_string"] == f"token={FILTERED}&limit=5"
    # Ours or the SDK's own scrubber (which leaves "" and a note in _meta).
    assert {request["headers"][h] for h in ("Authorization", "Cookie", "X-Api-Key")} <= {FILTERED, ""}
    assert "cookies" not in request
    for raw in fake_sentry.raw:
        text = raw.decode()
        for secret in (cookie, query_token, header_key, db_password, *env.values()):
            assert secret not in text
