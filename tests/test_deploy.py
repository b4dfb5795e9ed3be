"""Deployment files: docker-compose.yml, Dockerfile, deploy/config.production.yaml,
deploy/mosquitto/mosquitto.conf.

Needs neither Django settings nor a database (the production checks run
manage.py in a subprocess). The compose check runs when docker-compose (v1.29+)
or the docker compose v2 plugin is installed; the broker check runs the real
``mosquitto`` binary when it is on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
DOCKERFILE = ROOT / "Dockerfile"

PRODUCTION_CONFIG = ROOT / "deploy" / "config.production.yaml"

REQUIRED_SERVICES = {
    "web", "worker", "worker-background", "beat", "bridge", "redis", "mosquitto", "postgres", "migrate",
    "prometheus", "grafana", "flower",
}  # fmt: skip
APP_SERVICES = ("web", "worker", "worker-background", "beat", "bridge")
ONE_SHOT_SERVICES = {"migrate"}  # run to completion before the others: no health to check
# 16.6-alpine, 7.2.7-alpine, 2.0.20, 3.11.11-slim-bookworm, v2.55.1
VERSION_TAG = re.compile(r"^v?\d+(\.\d+)+")
# What docker-compose.yml requires from the environment (${VAR:?...}); test values.
COMPOSE_ENV = {
    "V2G_SECRET_KEY": "compose-test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "POSTGRES_PASSWORD": "compose-test-db-password",
    "V2G_MQTT_PASSWORD": "compose-test-mqtt-password",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana-password",
    "FLOWER_BASIC_AUTH": "ops:compose-test-flower-password",
}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _image_tag(image: str) -> str | None:
    """The tag of ``[registry[:port]/]name[:tag][@digest]``, or None when absent."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- static checks -------------------------------------------------------------


def test_compose_defines_all_services():
    services = _compose()["services"]
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, missing


def test_compose_has_no_version_key():
    assert "version" not in _compose()


def test_every_image_is_pinned_to_a_version():
    services = _compose()["services"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"service {name} has no image"
        tag = _image_tag(image)
        assert tag, f"service {name}: image {image!r} has no tag"
        assert tag != "latest", f"service {name}: image {image!r} uses latest"
        if "build" not in service:  # third-party image: an exact version
            assert VERSION_TAG.match(tag), f"service {name}: {image!r} is not pinned to a version"


def test_dockerfile_base_image_is_pinned():
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert base, "Dockerfile has no FROM line"
    tag = _image_tag(base.group(1))
    assert tag and VERSION_TAG.match(tag), f"Dockerfile base {base.group(1)!r} is not pinned"
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", DOCKERFILE.read_text(), re.MULTILINE), "runs as root"


def _bind_sources(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount (named volumes excluded)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type", "bind") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":", 1)[0]))
    return mounts


def test_mosquitto_runs_the_tls_config_with_its_acl_passwords_and_certificates():
    service = _compose()["services"]["mosquitto"]
    assert service["command"] == ["mosquitto", "-c", "/mosquitto/config/mosquitto.prod.conf"]
    mounts = {target: source for source, target in _bind_sources(service)}
    assert mounts["/mosquitto/config"] == "./deploy/mosquitto"  # mosquitto.prod.conf, acl, passwd
    assert mounts["/mosquitto/certs"] == "./deploy/certs/broker"
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.prod.conf").read_text()
    # Every file the broker configuration names is mounted where it looks.
    for path in re.findall(r"^(?:cafile|certfile|keyfile|password_file|acl_file)\s+(\S+)", conf, re.M):
        assert any(path.startswith(target + "/") for target in mounts), path
    assert "allow_anonymous false" in conf
    ports = {str(port).split(":")[-1] for port in service["ports"]}
    assert ports == {"8883", "8884"}  # TLS listeners only; no plain 1883


def test_the_platform_trusts_the_brokers_ca_and_speaks_tls():
    production = yaml.safe_load(PRODUCTION_CONFIG.read_text())
    assert production["mqtt"]["url"].startswith("ssl://mosquitto:8883")
    assert production["mqtt"]["auth_method"] == "password"
    ca = production["mqtt"]["ca_bundle"]
    for name in APP_SERVICES:
        mounts = _bind_sources(_compose()["services"][name])
        assert any(ca.startswith(target + "/") for _, target in mounts), (name, ca)
        # Only the CA: the broker's private key is not mounted into the application.
        assert all("broker" not in source for source, _ in mounts), name


def test_every_service_has_a_healthcheck_and_a_restart_policy():
    services = _compose()["services"]
    for name, service in services.items():
        if "secure" in service.get("profiles", []):
            continue
        assert service.get("restart") in {"always", "unless-stopped", "on-failure", "no"}, name
        if name in ONE_SHOT_SERVICES:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] == "unless-stopped", name
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_application_healthchecks_check_what_matters():
    services = _compose()["services"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])  # liveness, not readiness
    for name in ("worker", "worker-background"):
        worker = services[name]["healthcheck"]["test"][1]
        assert "inspect ping" in worker and "celery@$$HOSTNAME" in worker  # this container's node only
    assert "v2g_project.heartbeat var/run/beat.alive" in services["beat"]["healthcheck"]["test"][1]
    assert "v2g_project.heartbeat var/run/mqtt_bridge.alive" in services["bridge"]["healthcheck"]["test"][1]


def test_redis_never_evicts_and_persists():
    redis = _compose()["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--appendonly"] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"]), "the append-only file must be on a volume"


def test_flower_has_basic_auth_from_the_environment_and_watches_the_broker():
    flower = _compose()["services"]["flower"]
    assert flower["image"].startswith("mher/flower:")
    env = flower["environment"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", env["FLOWER_BASIC_AUTH"]), "auth must be required"
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"


def test_grafana_and_prometheus_mount_the_repositorys_configuration():
    services = _compose()["services"]
    prometheus = dict((t, s) for s, t in _bind_sources(services["prometheus"]))
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
    grafana = dict((t, s) for s, t in _bind_sources(services["grafana"]))
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    env = services["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])


def test_every_mounted_host_path_exists_in_the_repository():
    for name, service in _compose()["services"].items():
        for source, target in _bind_sources(service):
            path = (ROOT / source).resolve()
            assert path.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert path.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_secrets_come_from_the_environment_never_from_the_file():
    text = COMPOSE_FILE.read_text()
    for var in COMPOSE_ENV:
        # Required (${VAR:?message}): a forgotten secret stops `compose up`, no default is used.
        uses = re.findall(r"\$\{" + var + r"(:?[-?][^}]*)?\}", text)
        assert uses and all(use.startswith(":?") for use in uses), (var, uses)
    assert "password:" not in text.lower().replace("_password:", "")


def test_the_prometheus_multiprocess_directory_is_wiped_before_the_app_starts():
    services = _compose()["services"]
    migrate = " ".join(services["migrate"]["command"])
    assert "metrics_reset --if-idle" in migrate
    assert any(
        v.startswith("prometheus-multiproc:/app/var/prometheus") for v in services["migrate"]["volumes"]
    )


def _worker_queues(service: dict) -> set[str]:
    command = service["command"]
    return set(command[command.index("--queues") + 1].split(","))


def test_the_dispatch_and_background_workers_cover_every_queue_and_share_none():
    from v2g_project.config import load_config
    from v2g_project.queues import queue_names

    services = _compose()["services"]
    config = load_config(_production_env(), path=PRODUCTION_CONFIG)
    dispatch, background = _worker_queues(services["worker"]), _worker_queues(services["worker-background"])
    assert dispatch == {config.celery.queues.dispatch, config.celery.default_queue}
    assert not dispatch & background
    assert dispatch | background == set(queue_names(config.celery))
    # One Beat, and bridges that can be scaled: they share one subscription group.
    assert config.mqtt.shared_group
    assert "--concurrency" in services["worker"]["command"]


def test_app_services_wait_for_migrations():
    services = _compose()["services"]
    for name in APP_SERVICES:
        depends = services[name].get("depends_on", {})
        assert depends.get("migrate", {}).get("condition") == "service_completed_successfully", name


# --- docker-compose config -------------------------------------------------------


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = _compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is on PATH")
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env={key: value for key, value in env.items() if key not in COMPOSE_ENV or key in env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_is_valid():
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    result = _compose_config({**base, **COMPOSE_ENV})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_ENV))
def test_compose_config_refuses_a_missing_secret(missing):
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    env = {**base, **{k: v for k, v in COMPOSE_ENV.items() if k != missing}}
    result = _compose_config(env)
    assert result.returncode != 0
    assert missing in result.stdout + result.stderr


# --- the production configuration ---------------------------------------------------


def _production_env(**overrides: str) -> dict[str, str]:
    """The application containers' environment (x-app-env), outside a container."""
    anchors = _compose()["x-app-env"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K_", "V2G_", "DATABASE_URL", "CELERY_"))}
    for key, value in anchors.items():
        # ${VAR:?msg} -> the test value; ${VAR:-default} -> the default.
        def interpolate(match: re.Match) -> str:
            name, op, arg = match.group(1), match.group(2), match.group(3)
            return COMPOSE_ENV.get(name, arg if op == ":-" else "")

        env[key] = re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", interpolate, str(value))
    env["V2G_CONFIG"] = str(PRODUCTION_CONFIG)
    # Keep this process's Prometheus files out of the development directory.
    env["K_METRICS__MULTIPROC_DIR"] = os.environ.get("K_METRICS__MULTIPROC_DIR", "/tmp/v2g-test-prometheus")
    env.update(overrides)
    return env


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_production_configuration():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout + result.stderr


def test_check_deploy_fails_with_the_development_defaults():
    """The check above means something: the defaults (debug on) do not pass."""
    env = _production_env()
    env.pop("V2G_CONFIG")
    env = {k: v for k, v in env.items() if not k.startswith("K_WEB__")}
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "security.W018" in result.stderr  # DEBUG on


def test_production_refuses_the_development_secret_key_at_start_up():
    from v2g_project.config import DEV_SECRET_KEY

    result = _manage("check", env=_production_env(K_WEB__SECRET_KEY=DEV_SECRET_KEY))
    assert result.returncode == 2
    assert "web.secret_key (from environment K_WEB__SECRET_KEY)" in result.stderr
    assert "development secret key" in result.stderr
    assert DEV_SECRET_KEY not in result.stderr + result.stdout


def test_production_reads_secrets_from_files(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(COMPOSE_ENV["V2G_SECRET_KEY"] + "\n")
    env = _production_env(K_WEB__SECRET_KEY_FILE=str(key_file))
    env.pop("K_WEB__SECRET_KEY")
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_start_up_errors_never_print_secrets(tmp_path):
    secret = "s3cret-" + "Q" * 10  # too short for a production key
    mqtt_file = tmp_path / "mqtt_password"
    mqtt_file.write_text("mqtt-s3cret-from-a-file")
    env = _production_env(
        K_WEB__SECRET_KEY=secret,
        K_MQTT__PASSWORD_FILE=str(mqtt_file),
        DATABASE_URL="postgres://v2g:db-s3cret@postgres:5432/v2g",
        K_API__STATIC_TOKEN="short-s3cret",
        K_SENTRY__DSN_FILE=str(tmp_path / "missing-dsn"),
    )
    env.pop("K_MQTT__PASSWORD")
    result = _manage("check", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "K_SENTRY__DSN_FILE" in output and "sentry.dsn" in output  # names the key...
    assert "s3cret" not in output  # ...never a secret


# --- the real broker accepts the shipped config ------------------------------------


def _test_config(source: str, port: int) -> str:
    """The shipped config, but on a free loopback port, without persistence or log files."""
    lines = []
    for line in source.splitlines():
        key = line.split("#", 1)[0].split()[0] if line.split("#", 1)[0].strip() else ""
        if key == "listener":
            lines.append(f"listener {port} 127.0.0.1")
        elif key == "persistence":
            lines.append("persistence false")
        elif key in ("persistence_location", "log_dest"):
            continue
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


# MQTT 3.1.1 CONNECT, clean session, keepalive 60 s, empty client id.
_CONNECT = bytes([0x10, 0x0C, 0x00, 0x04, *b"MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00])
_CONNACK_ACCEPTED = bytes([0x20, 0x02, 0x00, 0x00])


def test_mosquitto_starts_with_shipped_config(tmp_path):
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if binary is None:
        pytest.skip("the mosquitto broker binary is not installed")
    source = MOSQUITTO_CONF.read_text()
    assert re.search(r"^listener\s+1883\b", source, re.MULTILINE)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(_test_config(source, port))
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 5.0
        sock = None
        while sock is None:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen within 5 s:\n{log_path.read_text()}")
                time.sleep(0.05)
        with sock:
            sock.settimeout(5.0)
            sock.sendall(_CONNECT)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    break
                reply += chunk
        assert reply == _CONNACK_ACCEPTED, (reply, log_path.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
