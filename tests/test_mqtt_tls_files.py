"""The MQTT TLS files of the configuration (mqtt.ca_bundle, mqtt.client_cert,
mqtt.client_key): a path that cannot be loaded stops the worker and the
bridge at start-up naming its key, and /readyz and `health` name it too,
rather than OpenSSL's bare "No such file or directory" at every connection.

No server needed: certificates from scripts/gen-certs.sh (openssl), the
worker and the bridge stop before they connect to anything."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, subprocess_env
from v2g_project import mqtt
from v2g_project.config import ConfigError, MqttConfig

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")

TLS_URL = "ssl://127.0.0.1:8883"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen-certs.sh"), str(out), "v2g-platform", "ev-1"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "pkey", "-in", str(out / "v2g-platform.key"), "-aes256", "-passout", "pass:secret-pass",
         "-out", str(out / "encrypted.key")],
        check=True, capture_output=True,
    )  # fmt: skip
    (out / "junk.pem").write_text("not a certificate\n")
    return out


def cfg(**fields: str) -> MqttConfig:
    return MqttConfig(url=TLS_URL, **fields)


def test_good_files_load_and_tls_off_checks_nothing(certs):
    mqtt.tls_check(cfg(ca_bundle=str(certs / "ca.crt")))
    mqtt.tls_check(
        cfg(
            ca_bundle=str(certs / "ca.crt"),
            auth_method="tls",
            client_cert=str(certs / "v2g-platform.crt"),
            client_key=str(certs / "v2g-platform.key"),
        )
    )
    # TLS off: the files are not used, so not read.
    mqtt.tls_check(MqttConfig(url="tcp://127.0.0.1:1883", ca_bundle="/nonexistent/ca.crt"))


@pytest.mark.parametrize(
    "fields, expected",
    [
        (
            {"ca_bundle": "{certs}/missing.crt"},
            "mqtt.ca_bundle: cannot read {certs}/missing.crt: No such file",
        ),
        ({"ca_bundle": "{certs}"}, "mqtt.ca_bundle: cannot read {certs}: Is a directory"),
        (
            {"ca_bundle": "{certs}/junk.pem"},
            "mqtt.ca_bundle: {certs}/junk.pem holds no usable PEM CA certificate",
        ),
        (
            {"client_cert": "{certs}/missing.crt", "client_key": "{certs}/v2g-platform.key"},
            "mqtt.client_cert: cannot read {certs}/missing.crt",
        ),
        (
            {"client_cert": "{certs}/v2g-platform.crt", "client_key": "{certs}/missing.key"},
            "mqtt.client_key: cannot read {certs}/missing.key",
        ),
        (
            {"client_cert": "{certs}/v2g-platform.crt", "client_key": "{certs}/ev-1.key"},
            "mqtt.client_cert, mqtt.client_key: {certs}/v2g-platform.crt and {certs}/ev-1.key are not a PEM "
            "certificate and its unencrypted private key",
        ),
        (
            {"client_cert": "{certs}/junk.pem", "client_key": "{certs}/v2g-platform.key"},
            "mqtt.client_cert, mqtt.client_key: {certs}/junk.pem",
        ),
        (
            {"client_cert": "{certs}/v2g-platform.crt", "client_key": "{certs}/encrypted.key"},
            "mqtt.client_key: the private key is encrypted",
        ),
    ],
    ids=[
        "ca missing",
        "ca a directory",
        "ca not PEM",
        "cert missing",
        "key missing",
        "key of another cert",
        "cert not PEM",
        "key encrypted",
    ],
)
def test_a_bad_tls_file_is_refused_naming_its_key(certs, fields, expected):
    # A good CA bundle unless the case is about it: each case has one bad file.
    fields = {"ca_bundle": str(certs / "ca.crt"), **{k: v.format(certs=certs) for k, v in fields.items()}}
    with pytest.raises(ConfigError) as refused:
        mqtt.tls_check(cfg(**fields))
    assert expected.format(certs=certs) in str(refused.value)
    # Every client is built through the same check (publishers, bridge, /readyz).
    with pytest.raises(ConfigError):
        mqtt.client_create(cfg(**fields), "test", will=False)


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "celery", "-A", "v2g_project", "worker", "--pool", "prefork", "--concurrency", "1"],
        ["manage.py", "mqtt_bridge", "--heartbeat-file", ""],
    ],
    ids=["worker", "bridge"],
)
def test_the_worker_and_the_bridge_stop_at_start_up_naming_the_key(certs, command):
    """Exit 2 with the key named, before connecting to anything, no traceback
    (the broker URL points at a closed port: reaching it would hang, not exit)."""
    env = subprocess_env(
        K_MQTT__URL="ssl://127.0.0.1:9",
        K_MQTT__CA_BUNDLE=str(certs / "missing-ca.crt"),
        CELERY_BROKER_URL="redis://127.0.0.1:9/0",
        DATABASE_URL="",
        V2G_CONFIG="",
    )
    run = subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"v2g: mqtt.ca_bundle: cannot read {certs}/missing-ca.crt: No such file or directory" in run.stderr
    assert "Traceback" not in run.stderr
