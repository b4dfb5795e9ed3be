"""MQTT payloads as a vehicle sees them (SPEC §5): the command it reads, the ack
it writes, the pull/discovery requests it answers, and its Last Will and
birth message. Pure functions; a bad
command raises :class:`CommandError`, which the fleet counts and ignores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

from simulator.domain import iso
from v2g_project.payloads import PayloadError, iso_datetime


class CommandError(ValueError):
    """A command the vehicle cannot read; never acked (there may be no id to ack)."""


@dataclass(frozen=True)
class Command:
    command_id: str
    vehicle_id: str
    power_kw: float  # SPEC sign: positive = discharge to the grid
    start_at: datetime | None
    valid_until: datetime


def _when(payload: dict, name: str, *, required: bool) -> datetime | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise CommandError(f"{name} is missing")
        return None
    try:
        return iso_datetime(value, name)
    except PayloadError as exc:
        raise CommandError(str(exc)) from None


def command_parse(payload: bytes, topic_vehicle: str) -> Command:
    """The fields a vehicle acts on. ``command_id``, ``vehicle_id``, ``power_kw``
    and ``valid_until`` are required; ``start_at`` defaults to now; the other
    SPEC fields (dispatch_id, signal_type, ...) are not needed by a vehicle."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise CommandError("not JSON") from None
    if not isinstance(data, dict):
        raise CommandError("not a JSON object")
    command_id = data.get("command_id")
    if not isinstance(command_id, str) or not command_id:
        raise CommandError("command_id is missing")
    vehicle_id = data.get("vehicle_id")
    if vehicle_id != topic_vehicle:
        raise CommandError(f"vehicle_id {vehicle_id!r} does not match the topic's {topic_vehicle!r}")
    power = data.get("power_kw")
    if isinstance(power, bool) or not isinstance(power, int | float) or not math.isfinite(power):
        raise CommandError("power_kw must be a finite number")
    return Command(
        command_id=command_id,
        vehicle_id=vehicle_id,
        power_kw=float(power),
        start_at=_when(data, "start_at", required=False),
        valid_until=_when(data, "valid_until", required=True),
    )


def dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def ack_encode(command_id: str, vehicle_id: str, reason: str | None, now: datetime) -> bytes:
    """SPEC §5 ack: accepted when ``reason`` is None, else rejected with it."""
    ack = {
        "command_id": command_id,
        "vehicle_id": vehicle_id,
        "status": "accepted" if reason is None else "rejected",
    }
    if reason is not None:
        ack["reason"] = reason
    ack["timestamp"] = iso(now)
    return dumps(ack)


def presence_encode(gateway: str, vehicle_ids: list[str], *, online: bool, now: datetime) -> bytes:
    """A gateway's birth message (``online``) or Last Will, naming its vehicles.

    ``timestamp`` is when it was made: for a will, when it was set (a will is
    fixed at CONNECT), so never later than the connection it belongs to; the
    platform dates a retained will by it (telemetry.services.vehicles_offline_record).
    """
    return dumps(
        {
            "gateway": gateway,
            "status": "online" if online else "offline",
            "online": online,
            "vehicle_ids": vehicle_ids,
            "timestamp": iso(now),
        }
    )


@dataclass(frozen=True)
class Request:
    """A pull or discovery broadcast: everyone answers unless ``vehicle_ids``
    names some; ``request_id`` is echoed in each answer when given."""

    request_id: str | None = None
    vehicle_ids: frozenset[str] | None = None


def request_parse(payload: bytes) -> Request:
    """Lenient: an empty or non-object payload is a plain broadcast."""
    try:
        data = json.loads(payload) if payload else {}
    except (ValueError, UnicodeDecodeError):
        return Request()
    if not isinstance(data, dict):
        return Request()
    request_id = data.get("request_id")
    ids = data.get("vehicle_ids")
    return Request(
        request_id=str(request_id) if request_id is not None else None,
        vehicle_ids=frozenset(map(str, ids)) if isinstance(ids, list) else None,
    )
