"""Health endpoints and the reachability of what the platform depends on.

- ``/healthz``: liveness. The process answers; no dependency is checked, so a
  database or broker outage never gets healthy web processes restarted (or
  taken out of a load balancer) for something a restart cannot fix. 200 while
  the process serves requests.
- ``/readyz``: readiness. Database, Celery broker and MQTT broker, checked in
  parallel; 503 with JSON naming each component that is down and its host.
- ``manage.py health`` runs the same checks (and can ask a real worker to answer).

Error texts name the component and its host, never credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from v2g_project import __version__, mqtt


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def _database_where() -> str:
    db = settings.DATABASES["default"]
    vendor = connections["default"].vendor
    if vendor == "sqlite":
        return f"sqlite {db['NAME']}"
    host = db.get("HOST") or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"{vendor}://{host}{port}/{db.get('NAME', '')}"


def check_database(timeout_s: float) -> None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; say where
        # The driver's first line says why (refused, authentication failed, ...);
        # drivers do not put the password in it, and it is scrubbed in case one did.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        password = settings.DATABASES["default"].get("PASSWORD")
        if password:
            reason = reason.replace(str(password), "***")
        raise ConnectionError(f"database {_database_where()} unavailable: {reason}") from None
    finally:
        connections.close_all()  # this ran in a helper thread; do not leak its connection


def check_broker(timeout_s: float) -> None:
    from v2g_project.celery import app

    url = settings.CELERY_BROKER_URL
    conn = app.connection_for_write(url)
    conn.connect_timeout = timeout_s
    conn.transport_options = {
        **conn.transport_options,
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
        "max_retries": 0,
    }
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        if conn.transport_cls == "redis" or url.startswith(("redis", "rediss")):
            conn.default_channel.client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; say which
        raise ConnectionError(f"Celery broker {_where(url)} unreachable: {type(exc).__name__}") from None
    finally:
        conn.release()


def check_mqtt(timeout_s: float) -> None:
    mqtt.probe(settings.V2G.mqtt, timeout_s)


CHECKS: dict[str, Callable[[float], None]] = {
    "database": check_database,
    "broker": check_broker,
    "mqtt": check_mqtt,
}


def run_checks(timeout_s: float | None = None) -> dict[str, dict]:
    """Run every check in parallel; each reports ok, latency and, if down, why."""
    timeout_s = timeout_s or settings.V2G.web.health_timeout_s

    def timed(check: Callable[[float], None]) -> dict:
        started = time.perf_counter()
        try:
            check(timeout_s)
        except Exception as exc:  # noqa: BLE001 - a check that raises anything is down
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        futures = {name: pool.submit(timed, check) for name, check in CHECKS.items()}
        return {name: future.result() for name, future in futures.items()}


@require_GET
def healthz(_request: HttpRequest) -> JsonResponse:
    """Liveness: answering is the whole test."""
    return JsonResponse({"status": "ok", "version": __version__})


@require_GET
def readyz(_request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database, the Celery broker and the MQTT broker all
    answer; else 503 with ``failing`` naming each one that does not."""
    checks = run_checks()
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    return JsonResponse(
        {
            "status": "unavailable" if failing else "ok",
            "version": __version__,
            "failing": failing,
            "checks": checks,
        },
        status=503 if failing else 200,
    )
