"""Security guarantees across the platform: production web settings, admin
CSRF, API tokens stored hashed, and no configured secret in any log of the
real processes. MQTT ACLs: tests/integration/test_mqtt_secure.py; fleet
isolation: tests/test_api_isolation.py."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.apps import apps
from django.conf import settings
from django.test import Client

from fleet import services
from fleet.models import ApiToken, Fleet, Vehicle
from tests.conftest import (
    ROOT,
    database_url,
    free_port,
    start_bridge,
    start_worker,
    stop_process,
    subprocess_env,
    wait_for,
    worker_ready,
)
from tests.test_deploy import _production_env

SETTINGS_PROBE = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({k: getattr(s, k, None) for k in (
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_HTTPONLY",
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_PROXY_SSL_HEADER",
    "SECURE_CONTENT_TYPE_NOSNIFF", "X_FRAME_OPTIONS", "MIDDLEWARE", "PASSWORD_HASHERS")}, default=list))
"""


def test_production_settings_secure_cookies_hsts_and_csrf():
    """The settings the processes get from deploy/config.production.yaml (loaded
    in a process of their own, as the containers do)."""
    run = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE], cwd=ROOT, env=_production_env(),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    s = json.loads(run.stdout)

    assert s["DEBUG"] is False
    assert s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    assert s["SESSION_COOKIE_HTTPONLY"] and s["CSRF_COOKIE_HTTPONLY"]
    assert s["SECURE_SSL_REDIRECT"] and s["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert s["SECURE_HSTS_SECONDS"] >= 31_536_000 and s["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert s["SECURE_CONTENT_TYPE_NOSNIFF"] and s["X_FRAME_OPTIONS"] == "DENY"
    assert "django.middleware.csrf.CsrfViewMiddleware" in s["MIDDLEWARE"]


@pytest.mark.django_db
def test_the_admin_refuses_a_post_without_the_csrf_token(django_user_model):
    django_user_model.objects.create_superuser("root", password=None)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(django_user_model.objects.get())

    login = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "root", "password": "x"})
    add = browser.post("/admin/fleet/fleet/add/", {"id": "csrf", "name": "CSRF"})
    api = browser.post("/api/fleets/", {"id": "csrf", "name": "CSRF"}, content_type="application/json")

    assert (login.status_code, add.status_code, api.status_code) == (403, 403, 403)
    assert "CSRF" in api.json()["detail"]
    assert not Fleet.objects.filter(id="csrf").exists()


@pytest.mark.django_db
def test_no_plaintext_token_anywhere_in_the_database(client):
    """Every table, every column: an issued token (nor its secret part) is
    nowhere, after it was issued, used and used wrongly."""
    Fleet.objects.create(id="paris", name="Paris")
    token = services.api_token_create(name="t", fleet_ids=["paris"], all_fleets=False)[1]
    secret_part = token.rsplit("_", 1)[-1]
    assert client.get("/api/fleets/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/fleets/", headers={"Authorization": f"Bearer {token}x"}).status_code == 401

    found = [
        f"{model._meta.db_table}: {row}"
        for model in apps.get_models()
        for row in model._base_manager.values_list()
        if secret_part in repr(row)
    ]
    assert found == []
    assert ApiToken.objects.count() == 1  # it is there, as its hash


# --- no secret in any log ------------------------------------------------------


def _web(log_path, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "v2g_project.wsgi:application", f"--bind=127.0.0.1:{port}",
             "--workers=1", "--no-control-socket", "--access-logfile=-"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _status(f"{url}/healthz") == 200 or proc.poll() is not None, 60, "gunicorn")
    return proc, url


def _status(url: str, headers: dict | None = None, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.django_db(transaction=True)
def test_no_configured_secret_reaches_a_log_of_web_worker_or_bridge(tmp_path, mqtt_client):
    """web (gunicorn), a worker and the bridge run with every secret configured
    (MQTT password, static and issued API tokens, Sentry DSN, RTE client
    secret, database password) and DEBUG logging; requests succeed and fail
    (bad tokens, a dispatch, a readiness check, a malformed ack), then every
    captured log is scanned for each secret."""
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        pytest.skip("the database password travels in a PostgreSQL URL")
    nonce = secrets.token_hex(4)
    fleet = Fleet.objects.create(id="secret-fleet", name="Secret fleet")
    Vehicle.objects.create(
        id=f"ev-{nonce}", fleet=fleet, battery_kwh=50, max_charge_kw=11, max_discharge_kw=11
    )
    issued = services.api_token_create(name="logs", fleet_ids=[], all_fleets=True)[1]
    secret_values = {
        "mqtt password": f"mqtt-pw-{nonce}-Zq",
        "static token": f"static-token-{nonce}-0123456789",
        "sentry key": f"sentrykey{nonce}",
        "rte secret": f"rte-secret-{nonce}-Xy",
        "database password": f"db-pw-{nonce}-Kw",
        "issued token": issued,
        "issued token secret": issued.rsplit("_", 1)[-1],
        "wrong token": f"v2g_{nonce}_wrong-secret-{nonce}",
    }
    # The test server's trust authentication ignores the password: it is only carried
    # (by the web process: conftest starts the worker and bridge on the test database's URL).
    db_url = re.sub(
        r"://([^:@/]+)(:[^@/]*)?@", rf"://\1:{secret_values['database password']}@",
        database_url(settings.DATABASES["default"]), count=1,
    )  # fmt: skip
    assert secret_values["database password"] in db_url
    queue = f"secrets-{nonce}"
    env = {
        "K_CELERY__DEFAULT_QUEUE": queue,
        "K_LOGGING__LEVEL": "DEBUG",
        "K_MQTT__USERNAME": "v2g-secrets-test",
        "K_MQTT__PASSWORD": secret_values["mqtt password"],
        "K_API__STATIC_TOKEN": secret_values["static token"],
        "K_SENTRY__DSN": f"http://{secret_values['sentry key']}@127.0.0.1:{free_port()}/42",
        "K_RTE__CLIENT_ID": "v2g-test",
        "K_RTE__CLIENT_SECRET": secret_values["rte secret"],
        "K_WEB__ALLOWED_HOSTS": "127.0.0.1",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker", "bridge")}
    worker = start_worker(logs["worker"], queue, concurrency=1, **env)
    processes = [worker]
    try:
        processes.append(start_bridge(logs["bridge"], **env))
        web, url = _web(
            logs["web"],
            subprocess_env(CELERY_BROKER_URL=settings.CELERY_BROKER_URL, DATABASE_URL=db_url, **env),
        )
        processes.append(web)
        worker_ready(queue, logs["worker"])

        bearer = {"Authorization": f"Bearer {issued}"}
        assert _status(f"{url}/api/vehicles/", bearer) == 200
        assert (
            _status(f"{url}/api/vehicles/", {"Authorization": f"Bearer {secret_values['static token']}"})
            == 200
        )
        assert (
            _status(f"{url}/api/vehicles/", {"Authorization": f"Bearer {secret_values['wrong token']}"})
            == 401
        )
        assert _status(f"{url}/api/vehicles/?token={issued}", {"Authorization": "Bearer nope"}) == 401
        assert _status(f"{url}/readyz") in (200, 503)
        signal = json.dumps(
            {"signal_type": "FCR", "power_kw": 5, "duration_s": 60, "fleet_id": "secret-fleet"}
        )
        headers = {**bearer, "Content-Type": "application/json"}
        assert _status(f"{url}/api/signals/", headers, signal.encode()) == 201
        mqtt_client.publish(f"vehicle/ev-{nonce}/ack", b"{not json", qos=1).wait_for_publish(5)
        done = re.compile(r"dispatch\.allocate\[[-0-9a-f]+\] succeeded")
        wait_for(
            lambda: done.search(logs["worker"].read_text(errors="replace")), 30, "the worker to dispatch"
        )
        wait_for(
            lambda: f"ev-{nonce}" in logs["bridge"].read_text(errors="replace"), 15, "the bridge to refuse"
        )
    finally:
        for proc in processes:
            stop_process(proc)

    leaks = [
        f"{what} in {name}.log"
        for name, path in logs.items()
        for what, value in secret_values.items()
        if value in path.read_text(errors="replace")
    ]
    assert leaks == []
    assert all(path.stat().st_size > 0 for path in logs.values())
