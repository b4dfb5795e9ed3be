"""MQTT payloads of dispatch (SPEC §5): the command sent to a vehicle and the
ack it answers with. Pure: no Django, Celery or paho."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from v2g_project.payloads import PayloadError, iso_datetime

ACK_STATUSES = ("accepted", "rejected")


def command_topic(template: str, vehicle_id: str) -> str:
    return template.replace("{vehicle_id}", vehicle_id)


class CommandEncoder:
    """Encodes the commands of one dispatch round (SPEC §5 command payload).

    The signal-level fields are the same for every vehicle: they are encoded
    once, and each command only adds its id, vehicle and setpoint.
    """

    def __init__(
        self,
        *,
        dispatch_id: uuid.UUID,
        signal_type: str,
        start_at: datetime,
        duration_s: float,
        valid_until: datetime,
        issued_at: datetime,
    ) -> None:
        shared = json.dumps(
            {
                "dispatch_id": str(dispatch_id),
                "signal_type": signal_type,
                "start_at": start_at.isoformat(),
                "duration_s": duration_s,
                "valid_until": valid_until.isoformat(),
                "issued_at": issued_at.isoformat(),
            },
            separators=(",", ":"),
        )
        self._tail = "," + shared[1:]  # the shared fields, closing brace included

    def encode(self, command_id: uuid.UUID, vehicle_id: str, power_kw: float) -> bytes:
        vehicle = json.dumps(vehicle_id)
        head = f'{{"command_id":"{command_id}","vehicle_id":{vehicle},"power_kw":{round(power_kw, 3)!r}'
        return (head + self._tail).encode()


def command_encode(
    *,
    command_id: uuid.UUID,
    dispatch_id: uuid.UUID,
    vehicle_id: str,
    signal_type: str,
    power_kw: float,
    start_at: datetime,
    duration_s: float,
    valid_until: datetime,
    issued_at: datetime,
) -> bytes:
    """One command on its own (the same bytes as CommandEncoder gives)."""
    encoder = CommandEncoder(
        dispatch_id=dispatch_id, signal_type=signal_type, start_at=start_at, duration_s=duration_s,
        valid_until=valid_until, issued_at=issued_at,
    )  # fmt: skip
    return encoder.encode(command_id, vehicle_id, power_kw)


@dataclass(frozen=True)
class Ack:
    command_id: uuid.UUID
    vehicle_id: str
    accepted: bool
    reason: str
    timestamp: datetime | None


def ack_decode(payload: dict, topic_vehicle: str | None) -> Ack:
    try:
        command_id = uuid.UUID(str(payload["command_id"]))
    except KeyError:
        raise PayloadError("command_id is missing") from None
    except ValueError:
        raise PayloadError("command_id is not a UUID") from None
    vehicle_id = payload.get("vehicle_id", topic_vehicle)
    if not isinstance(vehicle_id, str) or not vehicle_id:
        raise PayloadError("vehicle_id is missing")
    if topic_vehicle is not None and vehicle_id != topic_vehicle:
        raise PayloadError(f"vehicle_id {vehicle_id!r} does not match the topic's {topic_vehicle!r}")
    status = payload.get("status")
    if status not in ACK_STATUSES:
        raise PayloadError(f"status must be one of {', '.join(ACK_STATUSES)}")
    reason = payload.get("reason") or ""
    if not isinstance(reason, str):
        raise PayloadError("reason must be a string")
    timestamp = iso_datetime(payload["timestamp"], "timestamp") if payload.get("timestamp") else None
    return Ack(command_id, vehicle_id, status == "accepted", reason[:200], timestamp)
