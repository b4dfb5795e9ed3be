"""What the API benchmarks share: a migrated bench database with Django set up,
a superuser session, a gunicorn server on a free loopback port, and timing
repeated GETs."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench.dispatch_fanout import ROOT, database_migrate, free_port, percentile


def django_setup(database_url: str, name: str, **overrides: str) -> dict[str, str]:
    """Create and migrate the bench database, set up Django in this process with
    quiet logs and its own metrics directory (plus ``overrides``, e.g. config
    ``K_...`` variables); returns the environment for the server processes."""
    workdir = Path(tempfile.mkdtemp(prefix=f"v2g-bench-{name}-"))
    (workdir / "prometheus").mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "K_METRICS__MULTIPROC_DIR": str(workdir / "prometheus"),
        "K_LOGGING__LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "v2g_project.settings",
        **overrides,
    }
    os.environ.update(env)
    database_migrate(database_url, env)

    import django

    django.setup()
    return env


def session_cookie() -> str:
    """A logged-in superuser session (Django must be set up) as a Cookie header value."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    # A superuser: it sees every fleet (a staff user sees only the fleets its operator access grants).
    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    if not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


@contextlib.contextmanager
def gunicorn(env: Mapping[str, str], workers: int = 2) -> Iterator[str]:
    """The project under gunicorn; yields its base URL once /healthz answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "v2g_project.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=dict(env),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(10)


def time_get(url: str, cookie: str, repeat: int) -> dict:
    """``repeat`` sequential GETs of a paginated JSON list: p50/p95/max ms, size, rows."""
    durations, body = [], b""
    for _ in range(repeat):
        request = urllib.request.Request(url, headers={"Cookie": cookie, "Accept": "application/json"})
        begin = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        durations.append(time.perf_counter() - begin)
    ms = [d * 1000 for d in durations]
    return {
        "requests": repeat,
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "bytes": len(body),
        "rows": len(json.loads(body)["results"]),
    }
