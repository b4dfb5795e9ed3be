"""The MQTT bridge process against the real broker."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, bridge_session_clear, subprocess_env, wait_for
from v2g_project import mqtt

pytestmark = pytest.mark.services


@pytest.fixture
def lwt_topic() -> str:
    return f"v2g-test/lwt/{secrets.token_hex(4)}"


@pytest.fixture
def bridge_id() -> Iterator[str]:
    """The bridge's own client id (its persistent session is dropped after)."""
    client_id = f"v2g-test-bridge-{secrets.token_hex(4)}"
    yield client_id
    bridge_session_clear(client_id)


def start_bridge(lwt_topic: str, log_path, bridge_id: str) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the process lifetime
    return subprocess.Popen(
        [sys.executable, "manage.py", "mqtt_bridge", "--batch-wait-ms", "5"],
        cwd=ROOT,
        env=subprocess_env(K_MQTT__LWT_TOPIC=lwt_topic, K_MQTT__BRIDGE_CLIENT_ID=bridge_id),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_bridge_survives_bad_payloads_reports_lost_peers_and_stops_cleanly(
    mqtt_client, mqtt_cfg, subscribe, lwt_topic, tmp_path, bridge_id
):
    inbox = subscribe(lwt_topic)
    log_path = tmp_path / "bridge.log"
    bridge = start_bridge(lwt_topic, log_path, bridge_id)
    try:
        wait_for(lambda: "bridge connected" in log_path.read_text(), 20, "the bridge to connect")
        for bad in (b"{not json", b"[1, 2]", b"\xff\xfe", b"x" * 70_000):
            mqtt.publish_wait(mqtt_client, lwt_topic, bad, qos=1, timeout_s=5)
        lost = {"status": "offline", "client_id": "v2g-worker-test-1"}
        mqtt.publish_wait(mqtt_client, lwt_topic, json.dumps(lost), qos=1, timeout_s=5)

        wait_for(
            lambda: "v2g-worker-test-1" in log_path.read_text(), 20, "the bridge to report the lost client"
        )
        text = log_path.read_text()
        assert "payload is not JSON" in text
        assert "payload is a JSON list, expected an object" in text
        assert "payload is not UTF-8" in text
        assert "exceeds 65536" in text
        assert bridge.poll() is None  # still running after all that

        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=30) == 0
        assert "mqtt bridge stopping" in log_path.read_text()
    finally:
        if bridge.poll() is None:
            bridge.kill()
    # Only our own five test messages: the clean stop fired no Last Will.
    assert len(inbox.wait(5)) == 5


def test_a_killed_bridge_is_announced_by_its_last_will(subscribe, lwt_topic, tmp_path, bridge_id):
    inbox = subscribe(lwt_topic)
    log_path = tmp_path / "bridge.log"
    bridge = start_bridge(lwt_topic, log_path, bridge_id)
    try:
        wait_for(lambda: "bridge connected" in log_path.read_text(), 20, "the bridge to connect")
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(timeout=10)
        will = json.loads(inbox.wait(1)[0].payload)
        assert will["status"] == "offline"
        # The bridge's stable id (mqtt.bridge_client_id): its broker session outlives the process.
        assert will["client_id"] == bridge_id
    finally:
        if bridge.poll() is None:
            bridge.kill()
