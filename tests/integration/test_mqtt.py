"""The MQTT client factory against the real Mosquitto."""

from __future__ import annotations

import json
import multiprocessing
import secrets
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, free_port, replace, subprocess_env
from v2g_project import mqtt

pytestmark = pytest.mark.services


def test_publish_and_subscribe_through_the_broker(mqtt_cfg, subscribe, unique_topic):
    inbox = subscribe(unique_topic)
    sender = mqtt.client_create(mqtt_cfg, "test-sender", will=False)
    mqtt.connect(sender, mqtt_cfg)
    try:
        for n in range(50):
            mqtt.publish_wait(sender, unique_topic, json.dumps({"n": n}), qos=1, timeout_s=5)
    finally:
        mqtt.disconnect(sender)
    received = [json.loads(m.payload)["n"] for m in inbox.wait(50)]
    assert sorted(received) == list(range(50))


def test_socket_has_tcp_nodelay(mqtt_client):
    sock = mqtt_client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_each_client_gets_its_own_id(mqtt_cfg):
    ids = {mqtt.client_create(mqtt_cfg, "worker")._client_id for _ in range(20)}
    assert len(ids) == 20


def _child_publish(topic: str, queue) -> None:
    # What worker_process_init does in a Celery child, then a publish.
    from django.conf import settings

    mqtt.reset_after_fork()
    client = mqtt.publisher(settings.V2G.mqtt)
    mqtt.publish_wait(client, topic, b"from-child", qos=1, timeout_s=5)
    queue.put(client._client_id.decode())
    mqtt.publisher_close()


def test_a_forked_child_makes_its_own_publisher(mqtt_cfg, subscribe, unique_topic):
    parent = mqtt.publisher(mqtt_cfg)
    inbox = subscribe(unique_topic)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_publish, args=(unique_topic, queue))
    child.start()
    child_id = queue.get(timeout=15)
    child.join(15)
    assert child.exitcode == 0
    assert inbox.wait(1)[0].payload == b"from-child"
    assert child_id != parent._client_id.decode()
    # The parent's client still works after the child is gone.
    mqtt.publish_wait(parent, unique_topic, b"from-parent", qos=1, timeout_s=5)
    assert inbox.wait(2)[1].payload == b"from-parent"
    mqtt.publisher_close()


def test_unreachable_broker_gives_a_clear_error_without_credentials(mqtt_cfg):
    cfg = replace(
        mqtt_cfg, url=f"tcp://127.0.0.1:{free_port()}", username="fleet-op", password="hunter2-secret"
    )
    client = mqtt.client_create(cfg, "test", will=False)
    with pytest.raises(mqtt.MqttUnavailable) as caught:
        mqtt.connect(client, cfg, timeout_s=2)
    message = str(caught.value)
    assert "unreachable" in message and "127.0.0.1" in message
    assert "hunter2" not in message and "fleet-op" not in message


LWT_SCRIPT = textwrap.dedent(
    """
    import os, sys, django
    django.setup()
    from django.conf import settings
    from v2g_project import mqtt
    cfg = settings.V2G.mqtt.model_validate(
        {**settings.V2G.mqtt.model_dump(), "lwt_topic": sys.argv[2], "lwt_payload": sys.argv[1]}
    )
    client = mqtt.client_create(cfg, "lwt-test")
    mqtt.connect(client, cfg)
    if sys.argv[1] == "clean":
        mqtt.disconnect(client)
        print("done", flush=True)
    else:
        print("connected", flush=True)
        os.kill(os.getpid(), 9)
    """
)


def platform_process_ends(lwt_topic: str, **env: str) -> None:
    """A platform process connects with its Last Will on ``lwt_topic``, once
    stopping cleanly, once killed with SIGKILL."""
    for mode in ("clean", "killed"):
        proc = subprocess.run(
            [sys.executable, "-c", LWT_SCRIPT, mode, lwt_topic],
            cwd=ROOT, env=subprocess_env(**env), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert proc.stdout.strip() in ("done", "connected"), proc.stderr


def test_last_will_fires_on_abrupt_death_and_not_on_clean_exit(mqtt_cfg, subscribe):
    lwt_topic = f"v2g-test/lwt/{secrets.token_hex(4)}"
    inbox = subscribe(lwt_topic)
    platform_process_ends(lwt_topic)
    payloads = [m.payload.decode() for m in inbox.wait(1)]
    assert payloads == ["killed"]  # only the abrupt death was announced
