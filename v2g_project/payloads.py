"""Helpers shared by the apps' payload codecs. Pure."""

from __future__ import annotations

import math
from datetime import datetime


class PayloadError(ValueError):
    """A payload that cannot be recorded; the message says why."""


def iso_datetime(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{field} is not ISO 8601: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{field} has no UTC offset")
    return parsed


def finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError(f"{field} must be a finite number")
    return float(value)


def vehicle_from_topic(topic: str, template: str) -> str | None:
    """The vehicle id in ``topic`` for a subscription like ``vehicle/+/ack``."""
    parts, pattern = topic.split("/"), template.split("/")
    if len(parts) != len(pattern) or "+" not in pattern:
        return None
    for part, expected in zip(parts, pattern, strict=True):
        if expected not in ("+", part):
            return None
    return parts[pattern.index("+")]
