"""MQTT state payload (SPEC §5): ``vehicle_id, soc, plugged_in, power_kw, timestamp``
and optional ``battery_kwh, departure_at, target_soc``; pull answers echo
``request_id``; discovery answers add the vehicle's capabilities; Last Wills
and birth messages name the vehicles they speak for. Pure."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from v2g_project.payloads import PayloadError, finite, iso_datetime


@dataclass(frozen=True)
class State:
    vehicle_id: str
    soc: float
    plugged_in: bool
    power_kw: float
    timestamp: datetime
    departure_at: datetime | None = None  # the driver's next departure, when the vehicle reports it


def state_decode(payload: dict, topic_vehicle: str | None) -> State:
    vehicle_id = payload.get("vehicle_id", topic_vehicle)
    if not isinstance(vehicle_id, str) or not vehicle_id:
        raise PayloadError("vehicle_id is missing")
    if topic_vehicle is not None and vehicle_id != topic_vehicle:
        raise PayloadError(f"vehicle_id {vehicle_id!r} does not match the topic's {topic_vehicle!r}")
    if "soc" not in payload:
        raise PayloadError("soc is missing")
    soc = finite(payload["soc"], "soc")
    if not 0 <= soc <= 1:
        raise PayloadError(f"soc {soc} is outside 0-1 (a fraction, not percent)")
    plugged = payload.get("plugged_in")
    if not isinstance(plugged, bool):
        raise PayloadError("plugged_in must be true or false")
    power = finite(payload.get("power_kw", 0.0), "power_kw")
    if "timestamp" not in payload:
        raise PayloadError("timestamp is missing")
    departure = payload.get("departure_at")
    return State(
        vehicle_id, soc, plugged, power, iso_datetime(payload["timestamp"], "timestamp"),
        departure_at=None if departure is None else iso_datetime(departure, "departure_at"),
    )  # fmt: skip


@dataclass(frozen=True)
class Capabilities:
    """What a discovery answer says of the vehicle (SPEC §5 discovery)."""

    battery_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    is_v2g: bool
    min_soc: float
    target_soc: float


def capabilities_decode(payload: dict) -> Capabilities:
    def number(
        field: str, default: float | None = None, *, low: float = 0.0, high: float | None = None
    ) -> float:
        if field not in payload:
            if default is None:
                raise PayloadError(f"{field} is missing")
            return default
        value = finite(payload[field], field)
        if value < low or (high is not None and value > high):
            raise PayloadError(f"{field} {value} is out of range")
        return value

    battery = number("battery_kwh")
    if battery <= 0:
        raise PayloadError("battery_kwh must be positive")
    is_v2g = payload.get("is_v2g", True)
    if not isinstance(is_v2g, bool):
        raise PayloadError("is_v2g must be true or false")
    return Capabilities(
        battery_kwh=battery,
        max_charge_kw=number("max_charge_kw"),
        max_discharge_kw=number("max_discharge_kw", 0.0),
        is_v2g=is_v2g,
        min_soc=number("min_soc", 0.2, high=1.0),
        target_soc=number("target_soc", 0.8, high=1.0),
    )


@dataclass(frozen=True)
class Will:
    """A message on ``lwt_topic_prefix/<id>``: a Last Will, or (``online``) a
    birth message, which a client publishes when it connects, retained on the
    same topic, so that it replaces the will the broker may still hold."""

    vehicle_ids: tuple[str, ...]
    online: bool
    # When the will was set. A will is fixed at CONNECT, so this can be no later
    # than the start of the connection whose loss it announces.
    timestamp: datetime | None


def will_decode(payload: dict, topic_vehicle: str | None) -> Will:
    """The vehicles are ``vehicle_ids`` (a gateway), else ``vehicle_id``, else the
    topic's last level; a birth says ``"online": true`` or ``"status": "online"``.
    An unreadable ``timestamp`` is None (a live will is dated by its arrival)."""
    ids = payload.get("vehicle_ids")
    if isinstance(ids, list):
        named = tuple(dict.fromkeys(v for v in ids if isinstance(v, str) and v))
    else:
        one = payload.get("vehicle_id") or topic_vehicle
        named = (one,) if isinstance(one, str) and one else ()
    if not named:
        raise PayloadError("names no vehicle")
    online = payload.get("online") is True or payload.get("status") == "online"
    try:
        timestamp = iso_datetime(payload["timestamp"], "timestamp") if "timestamp" in payload else None
    except PayloadError:
        timestamp = None
    return Will(named, online, timestamp)


def request_id_decode(payload: dict) -> uuid.UUID | None:
    """The pull round an answer echoes, or None (an answer without a valid one
    is still a state worth recording)."""
    value = payload.get("request_id")
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def request_encode(request_id: uuid.UUID, now: datetime) -> str:
    """The pull/discovery broadcast: vehicles echo ``request_id`` in their answer."""
    return json.dumps({"request_id": str(request_id), "timestamp": now.isoformat()})
