"""How the MQTT bridge turns what paho received into Messages for the routes
(v2g_project.bridge), without a broker: the RETAIN flag is handed on, an
empty payload (a retained message being deleted) is skipped, and a replayed
platform Last Will is not counted again."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from v2g_project.bridge import Bridge, MalformedPayload, Message, Route, payload_decode, platform_lwt_handle
from v2g_project.config import Config


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# The bridge refreshes the database connection before each handler call
# (close_old_connections), so the test needs database access even though the
# route here writes nothing: without it, the outcome depends on whether an
# earlier test of the session opened a connection.
@pytest.mark.django_db
def test_the_retain_flag_reaches_the_route_and_empty_payloads_are_skipped():
    received: list[Message] = []
    route = Route("vehicle_lwt", "v2g/vehicle/lwt/+", received.extend)
    bridge = Bridge(Config(), [route])
    empty_before = counter("mqtt_bridge_messages_total", route="vehicle_lwt", outcome="empty")
    malformed_before = counter("mqtt_bridge_messages_total", route="vehicle_lwt", outcome="malformed")
    now = time.time()
    bridge._deliver(
        [
            (route, "v2g/vehicle/lwt/ev-1", b'{"vehicle_id": "ev-1"}', now, False, True, None),
            (route, "v2g/vehicle/lwt/ev-2", b"", now, False, False, None),  # a retained message deleted
            (route, "v2g/vehicle/lwt/ev-3", b'{"vehicle_id": "ev-3"}', now, False, False, None),
        ]
    )
    assert [(m.topic.rsplit("/", 1)[-1], m.retain) for m in received] == [("ev-1", True), ("ev-3", False)]
    assert counter("mqtt_bridge_messages_total", route="vehicle_lwt", outcome="empty") == empty_before + 1
    assert counter("mqtt_bridge_messages_total", route="vehicle_lwt", outcome="malformed") == malformed_before


def test_a_replayed_platform_last_will_is_not_counted_again(caplog):
    before = counter("mqtt_platform_process_lost_total")
    payload = {"status": "offline", "client_id": "v2g-worker-h-1"}
    platform_lwt_handle([Message("v2g/lwt", payload, datetime.now(UTC), retain=True)])
    assert counter("mqtt_platform_process_lost_total") == before
    assert "earlier platform MQTT client loss" in caplog.text
    platform_lwt_handle([Message("v2g/lwt", payload, datetime.now(UTC))])
    assert counter("mqtt_platform_process_lost_total") == before + 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "too_deep"),  # would blow json's recursion without the check
        (b'{"a": ' * 17 + b"1" + b"}" * 17, "too_deep"),
        (b"x" * 70_000, "oversized"),
        (b"\xff\xfe", "not_utf8"),
        (b"{not json", "not_json"),
        (b'{"soc": ' + b"1" * 5000 + b"}", "not_json"),  # json.loads raises a plain ValueError
        (b"[1, 2]", "not_object"),
    ],
)
def test_bad_payloads_are_refused_with_their_reason(raw, reason):
    with pytest.raises(MalformedPayload) as refused:
        payload_decode(raw)
    assert refused.value.reason == reason


def test_brackets_inside_strings_do_not_count_as_nesting():
    payload = {"command_id": "x", "reason": "[[[[{{{{" * 10, "nested": {"a": {"b": [1]}}}
    assert payload_decode(json.dumps(payload).encode()) == payload


@pytest.mark.parametrize("group", ["", "v2g-bridges"])
def test_the_bridge_keeps_a_broker_session_of_its_own_on_mqtt_3_and_5(group):
    """One stable id per host ("{hostname}", so replicas of one compose service
    never take each other's session), and a kept session on both protocols:
    MQTT 3.1.1's clean-session flag off, or MQTT 5's (which shared
    subscriptions need) clean_start off with a session expiry."""
    import socket

    import paho.mqtt.client as paho

    from v2g_project import mqtt

    config = Config.model_validate(
        {"mqtt": {"bridge_client_id": "v2g-bridge-{hostname}", "shared_group": group}}
    )
    bridge = Bridge(config, [])
    assert bridge.client_id == f"v2g-bridge-{socket.gethostname()}"
    assert bridge.client._client_id == bridge.client_id.encode()
    args = mqtt.connect_args(bridge.client)
    if group:
        assert bridge.client._protocol == paho.MQTTv5
        assert args["clean_start"] is False
        assert args["properties"].SessionExpiryInterval == mqtt.SESSION_EXPIRY_S
    else:
        assert bridge.client._protocol == paho.MQTTv311
        assert bridge.client._clean_session is False
        assert args == {}
