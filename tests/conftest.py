"""Shared fixtures. Integration fixtures talk to the real servers named by the
configuration (Redis, Mosquitto, the database) and start real processes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from v2g_project import mqtt

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process of the project: ours, plus overrides;
    a value of "" removes the variable."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "v2g_project.settings"}
    for key, value in overrides.items():
        if value == "":
            env.pop(key, None)
        else:
            env[key] = value
    return env


def database_url(db: dict) -> str:
    """A DATABASE_URL for the database Django is using now (the test database)."""
    engine = db["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if engine.endswith("postgresql"):
        auth = quote(db.get("USER") or "")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"])
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        return f"postgres://{auth}@{host}:{port}/{db['NAME']}"
    raise RuntimeError(f"no URL form for {engine}")


def replace(model, **changes):
    """A validated copy of a frozen config model with some fields changed."""
    return type(model).model_validate({**model.model_dump(by_alias=True), **changes})


@pytest.fixture
def mqtt_cfg():
    return settings.V2G.mqtt


@pytest.fixture
def mqtt_client(mqtt_cfg) -> Iterator:
    """A connected client on the configured broker, for the test's own use."""
    client = mqtt.client_create(mqtt_cfg, "test", will=False)
    mqtt.connect(client, mqtt_cfg)
    yield client
    mqtt.disconnect(client)


class Inbox:
    """Messages received by a subscription, with a condition to wait on."""

    def __init__(self) -> None:
        self.messages: list = []
        self._cond = threading.Condition()

    def on_message(self, _client, _userdata, message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait(self, count: int = 1, timeout_s: float = 10.0) -> list:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")
            return list(self.messages)


@pytest.fixture
def subscribe(mqtt_client) -> Callable[[str], Inbox]:
    """subscribe(topic) -> Inbox, once the broker has confirmed the subscription."""

    def _subscribe(topic: str, qos: int = 1) -> Inbox:
        inbox = Inbox()
        granted = threading.Event()
        mqtt_client.message_callback_add(topic, inbox.on_message)
        mqtt_client.on_subscribe = lambda *args: granted.set()
        mqtt_client.subscribe(topic, qos=qos)
        assert granted.wait(5), f"broker did not confirm the subscription to {topic}"
        return inbox

    return _subscribe


@pytest.fixture
def unique_topic() -> str:
    return f"v2g-test/{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[dict]:
    """A real Celery worker process (prefork, 2 children) on its own queue,
    using the same broker and the same test database as the tests."""
    queue = f"test-{secrets.token_hex(4)}"
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
    )
    node = f"{queue}@%h"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "v2g_project",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--queues",
                queue,
                "--hostname",
                node,
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    info = {"queue": queue, "process": proc, "log": log_path}
    try:
        from v2g_project.tasks import health_ping

        result = health_ping.apply_async(args=["ready"], queue=queue)
        try:
            result.get(timeout=90)
        except Exception as exc:
            raise RuntimeError(f"worker did not start: {exc}\n{log_path.read_text()[-4000:]}") from exc
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
