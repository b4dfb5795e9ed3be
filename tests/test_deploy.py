"""Deployment files: docker-compose.yml, Dockerfile, deploy/mosquitto/mosquitto.conf.

Needs neither Django nor a database. The compose check runs when docker-compose
(v1.29+) or the docker compose v2 plugin is installed; the broker check runs the
real ``mosquitto`` binary when it is on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
DOCKERFILE = ROOT / "Dockerfile"

REQUIRED_SERVICES = {"web", "worker", "beat", "bridge", "redis", "mosquitto", "postgres", "migrate"}
VERSION_TAG = re.compile(r"^\d+(\.\d+)+")  # 16.6-alpine, 7.2.7-alpine, 2.0.20, 3.11.11-slim-bookworm


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


def test_mosquitto_mounts_the_shipped_config():
    volumes = _compose()["services"]["mosquitto"].get("volumes", [])
    sources = []
    for volume in volumes:
        if isinstance(volume, dict):
            sources.append(volume.get("source", ""))
        else:
            sources.append(volume.split(":", 1)[0])
    assert any(Path(src).as_posix().lstrip("./") == "deploy/mosquitto/mosquitto.conf" for src in sources), (
        volumes
    )


def test_app_services_wait_for_migrations():
    services = _compose()["services"]
    for name in ("web", "worker", "beat", "bridge"):
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


def test_compose_config_is_valid():
    command = _compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is on PATH")
    env = {**os.environ, "V2G_SECRET_KEY": "x" * 40}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
