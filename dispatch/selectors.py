"""Reads of dispatch state for the API, the CLI and the admin."""

from __future__ import annotations

from dispatch.models import Command, Dispatch, DispatchStatus
from dispatch.services import POWER_EPSILON_KW, signal_acknowledged_kw


def signal_status(rounds: list[Dispatch], requested_kw: float, acknowledged_kw: float) -> str:
    """One word for the whole signal across its rounds."""
    if any(not r.is_final for r in rounds):
        return "in_progress"
    first = rounds[0].status
    if first in (DispatchStatus.ZERO_POWER, DispatchStatus.NO_VEHICLES):
        return first
    if abs(acknowledged_kw - requested_kw) <= POWER_EPSILON_KW:
        return "completed"
    return "partial" if abs(acknowledged_kw) > POWER_EPSILON_KW else "failed"


def dispatch_detail(dispatch_id) -> dict | None:
    """The signal behind a dispatch id (any round) with all its rounds and commands."""
    dispatch = Dispatch.objects.select_related("signal").filter(id=dispatch_id).first()
    if dispatch is None:
        return None
    signal = dispatch.signal
    rounds = list(signal.dispatches.order_by("round"))
    acknowledged = signal_acknowledged_kw(signal.id)
    commands = (
        Command.objects.filter(dispatch__signal=signal)
        .order_by("dispatch__round", "vehicle_id")
        .values(
            "id",
            "dispatch__round",
            "vehicle_id",
            "power_kw",
            "allocated_kw",
            "status",
            "attempts",
            "published_at",
            "acked_at",
            "latency_s",
            "reason",
        )
    )
    return {
        "dispatch_id": rounds[0].id,
        "signal": signal,
        "status": signal_status(rounds, signal.power_kw, acknowledged),
        "requested_kw": signal.power_kw,
        "allocated_kw": round(sum(r.allocated_kw for r in rounds), 3),
        "acknowledged_kw": acknowledged,
        "rounds": rounds,
        "commands": [
            {
                "command_id": c["id"],
                "round": c["dispatch__round"],
                "vehicle_id": c["vehicle_id"],
                "power_kw": c["power_kw"],
                "allocated_kw": c["allocated_kw"],
                "status": c["status"],
                "attempts": c["attempts"],
                "published_at": c["published_at"],
                "acked_at": c["acked_at"],
                "latency_s": c["latency_s"],
                "reason": c["reason"],
            }
            for c in commands
        ],
    }
