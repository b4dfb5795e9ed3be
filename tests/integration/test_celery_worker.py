"""A real Celery worker process, over the real broker (Redis by default)."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from v2g_project.tasks import health_ping

pytestmark = pytest.mark.services


def test_a_real_worker_answers_a_ping(celery_worker):
    nonce = secrets.token_hex(8)
    answer = health_ping.apply_async(args=[nonce], queue=celery_worker["queue"]).get(timeout=30)
    assert answer["pong"] == nonce
    assert answer["pid"] != os.getpid()  # ran in another process, not eagerly here
    assert celery_worker["process"].poll() is None


def test_worker_publishes_over_mqtt_with_a_client_created_after_fork(celery_worker, subscribe, unique_topic):
    inbox = subscribe(unique_topic)
    nonce = secrets.token_hex(8)
    answer = health_ping.apply_async(
        args=[nonce], kwargs={"mqtt_topic": unique_topic}, queue=celery_worker["queue"]
    ).get(timeout=30)
    published = json.loads(inbox.wait(1)[0].payload)
    assert published["pong"] == nonce
    assert published["pid"] == answer["pid"]
    # The client id carries the role and the pid of the child process that made it.
    assert "-worker-" in answer["mqtt_client_id"]
    assert f"-{answer['pid']}-" in answer["mqtt_client_id"]


def test_worker_refuses_non_json_messages_and_keeps_working(celery_worker):
    from tests.conftest import wait_for

    health_ping.apply_async(args=["pickled"], queue=celery_worker["queue"], serializer="pickle")
    wait_for(
        lambda: (
            "ContentDisallowed" in celery_worker["log"].read_text()
            or "Refusing to deserialize" in celery_worker["log"].read_text()
        ),
        timeout_s=20,
        what="the worker to refuse a pickled message",
    )
    answer = health_ping.apply_async(args=["after"], queue=celery_worker["queue"]).get(timeout=30)
    assert answer["pong"] == "after"
