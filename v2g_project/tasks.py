"""Platform-level tasks."""

from __future__ import annotations

import json
import os
import socket

from celery import shared_task
from django.conf import settings
from django.utils import timezone


@shared_task(name="v2g.health_ping", ignore_result=False, expires=60)
def health_ping(nonce: str = "", mqtt_topic: str = "") -> dict:
    """Answer with who ran it, proving a real worker consumes the queue.

    With ``mqtt_topic``, also publish the answer through this worker process's
    own MQTT client, proving the worker -> broker path used for setpoints.
    """
    from v2g_project import mqtt

    answer = {
        "pong": nonce,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "at": timezone.now().isoformat(),
    }
    if mqtt_topic:
        cfg = settings.V2G.mqtt
        client = mqtt.publisher(cfg)
        answer["mqtt_client_id"] = client._client_id.decode()
        mqtt.publish_wait(client, mqtt_topic, json.dumps(answer), cfg.qos.command, timeout_s=5)
    return answer
