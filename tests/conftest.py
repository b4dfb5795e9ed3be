"""Shared fixtures. Integration fixtures talk to the real servers named by the
configuration (Redis, Mosquitto, the database) and start real processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from v2g_project import mqtt

ROOT = Path(__file__).resolve().parent.parent

# Every bridge a test starts without naming its id (the demo's, the end-to-end
# stacks') runs under this one, not the default "v2g-bridge": its persistent
# broker session is dropped when the run ends, so runs leave no session
# behind on the shared broker queueing acks for nobody.
SESSION_BRIDGE_ID = f"v2g-test-bridge-{secrets.token_hex(4)}"
os.environ.setdefault("K_MQTT__BRIDGE_CLIENT_ID", SESSION_BRIDGE_ID)


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("K_MQTT__BRIDGE_CLIENT_ID") == SESSION_BRIDGE_ID:
        # Without a broker (a pure-logic run) there is nothing to clear.
        with contextlib.suppress(Exception):
            bridge_session_clear(SESSION_BRIDGE_ID)


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
    a value of "" removes the variable. K_CELERY__DEFAULT_QUEUE (a test's own
    queue) routes every task class there too (``queue_env``), unless the
    overrides name a class's queue themselves."""
    if overrides.get("K_CELERY__DEFAULT_QUEUE"):
        overrides = {**queue_env(overrides["K_CELERY__DEFAULT_QUEUE"]), **overrides}
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


def metric_value(client, name: str, **labels) -> float:
    """The sum of a metric's samples with these labels, scraped from /metrics
    (which aggregates every process of the test run)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").content.decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def operator(username: str, fleets=None, **fields):
    """A staff user of the console with fleet access: every fleet (``fleets``
    None) or those fleet ids; ``fields`` go to create_user."""
    from django.contrib.auth import get_user_model

    from fleet.models import OperatorAccess

    fields.setdefault("is_staff", True)
    fields.setdefault("password", "pw-operator-1")
    user = get_user_model().objects.create_user(username, **fields)
    access = OperatorAccess.objects.create(user=user, all_fleets=fleets is None)
    if fleets is not None:
        access.fleets.set(fleets)
    return user


@pytest.fixture
def api(client, django_user_model):
    """The Django test client, logged in as an operator of every fleet: a staff
    user's session (the API takes sessions of staff users only; integrators use tokens)."""
    client.force_login(operator("api-operator"))
    return client


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


class PrivateBroker:
    """A Mosquitto of the test's own on a free loopback port, with the shipped
    settings of deploy/mosquitto/mosquitto.conf (throughput limits, persistence
    in ``workdir``), that the test may stop, restart or kill; the machine's
    shared broker is never touched."""

    KEPT = ("set_tcp_nodelay", "max_queued_messages", "max_inflight_messages", "persistence ",
            "persistent_client_expiration")  # fmt: skip

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.workdir = workdir
        shipped = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()
        kept = [line for line in shipped if line.startswith(self.KEPT)]
        assert len(kept) == len(self.KEPT), kept
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            "\n".join([f"listener {self.port} 127.0.0.1", "allow_anonymous true", *kept,
                       f"persistence_location {workdir}/", "log_dest stderr", "user root", ""])
        )  # fmt: skip
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        wait_for(self.reachable, 10, "the private broker")

    def reachable(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """A clean stop (SIGTERM): Mosquitto saves its sessions and queued messages."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def env(self, **extra: str) -> dict[str, str]:
        """Points a platform process at this broker."""
        return {"K_MQTT__URL": self.url, **extra}


# Dispatch timings for the processes the tests start: short enough to test timeouts quickly.
TEST_PROCESS_ENV = {
    "K_DISPATCH__ACK_TIMEOUT_SECONDS": "2",
    "K_MQTT__BACKOFF_MS": "50",
}


def queue_env(queue: str) -> dict[str, str]:
    """The environment that sends every task of a process to ``queue``: its
    default queue and every routed class (celery.queues, v2g_project/queues.py),
    so a test's processes keep their follow-up tasks to themselves."""
    from v2g_project.queues import CLASS_ORDER

    return {
        "K_CELERY__DEFAULT_QUEUE": queue,
        **{f"K_CELERY__QUEUES__{cls.upper()}": queue for cls in CLASS_ORDER},
    }


def start_worker(
    log_path: Path, queue: str, concurrency: int = 2, extra_args: Sequence[str] = (), **env: str
) -> subprocess.Popen:
    """A real Celery worker process (prefork) on ``queue`` (a comma-separated
    list: several), using the same broker and the same test database as the
    tests. With K_CELERY__DEFAULT_QUEUE, its routed tasks go there too."""
    environment = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        # ``env`` may name another broker (tests/reliability run a Redis of their own).
        **{"CELERY_BROKER_URL": settings.CELERY_BROKER_URL, **TEST_PROCESS_ENV, **env},
    )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
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
                str(concurrency),
                "--queues",
                queue,
                "--hostname",
                f"{queue.split(',')[0]}-{secrets.token_hex(3)}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                *extra_args,
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_ready(queue: str, log_path: Path) -> None:
    from v2g_project.tasks import health_ping

    try:
        health_ping.apply_async(args=["ready"], queue=queue.split(",")[0]).get(timeout=90)
    except Exception as exc:
        raise RuntimeError(f"worker did not start: {exc}\n{log_path.read_text()[-4000:]}") from exc


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[dict]:
    """The worker of the platform: consumes every queue, the default one and the
    routed ones (the broker of the tests is their own Redis database, see the
    Makefile), purged first."""
    from v2g_project.celery import app
    from v2g_project.queues import queue_names

    queue, every = app.conf.task_default_queue, queue_names(settings.V2G.celery)
    with app.connection_for_write() as conn:
        for name in every:
            conn.default_channel.queue_purge(name)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_worker(log_path, ",".join(every))
    try:
        worker_ready(queue, log_path)
        yield {"queue": queue, "process": proc, "log": log_path}
    finally:
        stop_process(proc)


def start_bridge(log_path: Path, **env: str) -> subprocess.Popen:
    """A real MQTT bridge process recording into the test database, with the
    test process timings plus ``env`` (e.g. K_TELEMETRY__MODE="hybrid");
    returns once it has connected and subscribed. Each bridge gets a client id
    of its own (K_MQTT__BRIDGE_CLIENT_ID, unless ``env`` names one, e.g. to
    restart a bridge on its session): bridges sharing an id kick each other off
    the broker. ``bridge_session_clear`` removes its broker session after."""
    env.setdefault("K_MQTT__BRIDGE_CLIENT_ID", f"v2g-test-bridge-{secrets.token_hex(4)}")
    environment = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]), **{**TEST_PROCESS_ENV, **env}
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge", "--batch-wait-ms", "5"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "bridge connected" in log_path.read_text() or proc.poll() is not None,
            30,
            "the bridge to connect",
        )
    except AssertionError:
        stop_process(proc)
        raise
    if proc.poll() is not None:
        raise RuntimeError(f"the bridge exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
    proc.bridge_client_id = env["K_MQTT__BRIDGE_CLIENT_ID"]
    return proc


def bridge_session_clear(client_id: str, url: str | None = None) -> None:
    """Drop a stopped bridge's persistent session from the broker (a clean
    session under its id), so it does not keep queueing acks for nobody."""
    from v2g_project.config import MqttConfig

    cfg = settings.V2G.mqtt if url is None else MqttConfig(url=url)
    client = mqtt.client_create(cfg, "test", will=False, client_id=client_id, clean_session=True)
    try:
        mqtt.connect(client, cfg, timeout_s=5)
    except mqtt.MqttUnavailable:
        return
    mqtt.disconnect(client)


def stop_bridge(proc: subprocess.Popen, url: str | None = None) -> None:
    stop_process(proc)
    bridge_session_clear(proc.bridge_client_id, url)


@pytest.fixture(scope="session")
def mqtt_bridge(django_db_setup, tmp_path_factory) -> Iterator[dict]:
    """The MQTT bridge process, recording into the test database."""
    log_path = tmp_path_factory.mktemp("bridge") / "bridge.log"
    proc = start_bridge(log_path)
    try:
        yield {"process": proc, "log": log_path}
    finally:
        stop_bridge(proc)


@pytest.fixture
def bridges(django_db_setup, tmp_path) -> Iterator[Callable[..., dict]]:
    """bridges(**env) -> {"process", "log"}: a bridge of this test's own, with its
    own configuration (the session one stays as it is); stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(**env: str) -> dict:
        log_path = tmp_path / f"bridge-{len(started)}.log"
        started.append(start_bridge(log_path, **env))
        started[-1].broker_url = env.get("K_MQTT__URL")
        return {"process": started[-1], "log": log_path}

    yield start
    for proc in started:
        stop_bridge(proc, proc.broker_url)
