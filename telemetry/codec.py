"""MQTT state payload (SPEC §5): ``vehicle_id, soc, plugged_in, power_kw, timestamp``
and optional ``battery_kwh, departure_at, target_soc``. Pure."""

from __future__ import annotations

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
    return State(vehicle_id, soc, plugged, power, iso_datetime(payload["timestamp"], "timestamp"))
