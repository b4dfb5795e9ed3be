"""Payload codecs and retry timing: pure, no I/O."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime

import pytest

from dispatch import codec
from dispatch.services import publish_retry_delay_s
from telemetry.codec import state_decode
from v2g_project.payloads import PayloadError, vehicle_from_topic

NOW = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)


def test_command_payload_has_the_spec_fields_and_escapes_ids():
    command_id, dispatch_id = uuid.uuid4(), uuid.uuid4()
    raw = codec.command_encode(
        command_id=command_id, dispatch_id=dispatch_id, vehicle_id='ev"7', signal_type="aFRR",
        power_kw=-7.4, start_at=NOW, duration_s=4.0, valid_until=NOW, issued_at=NOW,
    )  # fmt: skip
    payload = json.loads(raw)
    assert payload == {
        "command_id": str(command_id), "dispatch_id": str(dispatch_id), "vehicle_id": 'ev"7',
        "signal_type": "aFRR", "power_kw": -7.4, "start_at": "2025-03-30T01:00:00+00:00", "duration_s": 4.0,
        "valid_until": "2025-03-30T01:00:00+00:00", "issued_at": "2025-03-30T01:00:00+00:00",
    }  # fmt: skip


def test_one_encoder_serves_a_whole_round():
    encoder = codec.CommandEncoder(
        dispatch_id=uuid.uuid4(),
        signal_type="FCR",
        start_at=NOW,
        duration_s=600,
        valid_until=NOW,
        issued_at=NOW,
    )
    payloads = [json.loads(encoder.encode(uuid.uuid4(), f"ev-{n}", n * 1.23456)) for n in range(3)]
    assert [p["vehicle_id"] for p in payloads] == ["ev-0", "ev-1", "ev-2"]
    assert [p["power_kw"] for p in payloads] == [0.0, 1.235, 2.469]


@pytest.mark.parametrize(
    ("payload", "topic_vehicle", "error"),
    [
        ({"vehicle_id": "ev-1", "status": "accepted"}, "ev-1", "command_id is missing"),
        ({"command_id": "nope", "status": "accepted"}, "ev-1", "command_id is not a UUID"),
        ({"command_id": str(uuid.uuid4()), "status": "ok"}, "ev-1", "status must be one of"),
        ({"command_id": str(uuid.uuid4()), "vehicle_id": "ev-2", "status": "accepted"}, "ev-1", "does not match"),
        ({"command_id": str(uuid.uuid4()), "status": "accepted", "timestamp": "noon"}, "ev-1", "not ISO 8601"),
        ({"command_id": str(uuid.uuid4()), "status": "accepted", "timestamp": "2025-01-01T00:00:00"}, "ev-1",
         "no UTC offset"),
        ({"command_id": str(uuid.uuid4()), "status": "rejected", "reason": 5}, "ev-1", "reason must be a string"),
    ],
)  # fmt: skip
def test_bad_acks_say_what_is_wrong(payload, topic_vehicle, error):
    with pytest.raises(PayloadError, match=error):
        codec.ack_decode(payload, topic_vehicle)


def test_a_good_ack():
    command_id = uuid.uuid4()
    ack = codec.ack_decode(
        {"command_id": str(command_id), "status": "rejected", "reason": "cold battery", "timestamp": "2025-01-01T00:00:00Z"},
        "ev-1",
    )  # fmt: skip
    assert (ack.command_id, ack.vehicle_id, ack.accepted, ack.reason) == (
        command_id,
        "ev-1",
        False,
        "cold battery",
    )
    assert ack.timestamp == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"soc": 0.5, "plugged_in": True, "timestamp": "2025-01-01T00:00:00Z"}, None),
        ({"soc": 55, "plugged_in": True, "timestamp": "2025-01-01T00:00:00Z"}, "a fraction, not percent"),
        (
            {"soc": "half", "plugged_in": True, "timestamp": "2025-01-01T00:00:00Z"},
            "soc must be a finite number",
        ),
        (
            {"soc": 0.5, "plugged_in": "yes", "timestamp": "2025-01-01T00:00:00Z"},
            "plugged_in must be true or false",
        ),
        ({"soc": 0.5, "plugged_in": True}, "timestamp is missing"),
        ({"plugged_in": True, "timestamp": "2025-01-01T00:00:00Z"}, "soc is missing"),
        ({"soc": float("nan"), "plugged_in": True, "timestamp": "2025-01-01T00:00:00Z"}, "finite"),
    ],
)
def test_state_payloads(payload, error):
    if error is None:
        assert state_decode(payload, "ev-1").soc == 0.5
    else:
        with pytest.raises(PayloadError, match=error):
            state_decode(payload, "ev-1")


@pytest.mark.parametrize(
    ("topic", "template", "vehicle"),
    [
        ("vehicle/ev-1/ack", "vehicle/+/ack", "ev-1"),
        ("v2g/vehicle/state/ev-9", "v2g/vehicle/state/+", "ev-9"),
        ("vehicle/ev-1/command", "vehicle/+/ack", None),
        ("vehicle/a/b/ack", "vehicle/+/ack", None),
    ],
)
def test_vehicle_from_topic(topic, template, vehicle):
    assert vehicle_from_topic(topic, template) == vehicle


def test_publish_retries_back_off_exponentially_with_jitter():
    rng = random.Random(1)
    delays = [publish_retry_delay_s(attempt, 200, rng) for attempt in range(4)]
    for attempt, delay in enumerate(delays):
        assert 0.1 * 2**attempt <= delay <= 0.2 * 2**attempt
    assert len({round(publish_retry_delay_s(0, 200), 6) for _ in range(20)}) > 1  # jittered
