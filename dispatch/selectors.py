"""Reads of dispatch state for the API, the CLI and the admin."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, IntegerField, Max, OuterRef, Subquery
from django.db.models.functions import Cast, ExtractMinute, Floor, TruncHour

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus
from dispatch.services import POWER_EPSILON_KW, signal_acknowledged_kw
from fleet.models import Vehicle
from telemetry import prediction
from telemetry.models import VehicleState, VehicleStateHistory


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


# --- vehicle status (GET /api/vehicles/status) ----------------------------------------

STATUS_OFFSETS_MIN = (0, 15, 30, 60, 120, 240)


def _history_samples(vehicle_ids: list[str], since: datetime) -> dict[str, list[prediction.Sample]]:
    """History thinned by the database to one sample per vehicle and quarter-hour
    (plugged if plugged at any report in it): a week of 1-minute pushes is 672
    rows per vehicle instead of 10,080, and the forecast reads quarter-hours anyway."""
    rows = (
        VehicleStateHistory.objects.filter(vehicle_id__in=vehicle_ids, reported_at__gte=since)
        .annotate(hour=TruncHour("reported_at"), quarter=Floor(ExtractMinute("reported_at") / 15))
        .values("vehicle_id", "hour", "quarter")
        .annotate(plugged=Max(Cast("plugged_in", IntegerField())), soc=Avg("soc"), power=Avg("power_kw"))
    )
    samples: dict[str, list[prediction.Sample]] = defaultdict(list)
    for row in rows:
        at = row["hour"] + timedelta(minutes=15 * int(row["quarter"]) + 7.5)
        samples[row["vehicle_id"]].append(
            prediction.Sample(at, row["soc"], bool(row["plugged"]), row["power"] or 0.0)
        )
    return samples


def vehicle_statuses(vehicles: list[Vehicle], now: datetime) -> list[dict]:
    """Per vehicle: current status, forecast plug-in window and SoC, the next
    dispatch window and the last dispatch decision, in a handful of queries."""
    cfg = settings.V2G.telemetry
    ids = [v.id for v in vehicles]
    states = {s.vehicle_id: s for s in VehicleState.objects.filter(vehicle_id__in=ids)}
    history = _history_samples(ids, now - timedelta(days=cfg.prediction_history_days))
    engine = prediction.engine_for(cfg.prediction_engine)
    # Each vehicle's latest command by validity (index vehicle, valid_until): its
    # last decision, and the setpoint or dispatch window still ahead, if any.
    latest_ids = Vehicle.objects.filter(id__in=ids).annotate(
        last_command=Subquery(
            Command.objects.filter(vehicle=OuterRef("pk")).order_by("-valid_until").values("id")[:1]
        )
    )
    commands = {
        c.vehicle_id: c
        for c in Command.objects.filter(id__in=[v.last_command for v in latest_ids if v.last_command])
        .select_related("dispatch__signal")
        .annotate(selected=Count("dispatch__commands"))
    }
    stale_before = now - timedelta(seconds=cfg.stale_after_seconds)
    rows = []
    for vehicle in vehicles:
        state, command = states.get(vehicle.id), commands.get(vehicle.id)
        in_force = (
            command is not None
            and command.status in (CommandStatus.ACKED, CommandStatus.PUBLISHED, CommandStatus.PENDING)
            and command.valid_until > now
        )
        latest = (
            prediction.Sample(state.reported_at, state.soc, state.plugged_in, state.power_kw)
            if state
            else None
        )
        facts = prediction.VehicleFacts(
            vehicle_id=vehicle.id, battery_kwh=vehicle.battery_kwh, max_charge_kw=vehicle.max_charge_kw,
            max_discharge_kw=vehicle.max_discharge_kw, min_soc=vehicle.min_soc, target_soc=vehicle.target_soc,
            departure_at=vehicle.departure_at, latest=latest,
            setpoint_kw=command.power_kw if in_force and command.status == CommandStatus.ACKED else 0.0,
            setpoint_until=command.valid_until if in_force else None,
        )  # fmt: skip
        forecast = engine.forecast(facts, history.get(vehicle.id, []), now, STATUS_OFFSETS_MIN)
        rows.append(
            {
                "vehicle_id": vehicle.id,
                "current_status": _current_status(
                    state, in_force and command.status == CommandStatus.ACKED, stale_before
                ),
                "forecasted_plugin_window": _window(forecast.plugin_window),
                "forecasted_soc": {f"t+{m}m": round(soc, 4) for m, soc in sorted(forecast.soc.items())},
                "next_dispatch_window": _dispatch_window(command) if in_force else None,
                "last_dispatch_decision": _decision(command) if command else None,
            }
        )
    return rows


def _current_status(state: VehicleState | None, dispatched: bool, stale_before: datetime) -> str:
    if state is None:
        return "unknown"
    if not state.online:
        return "offline"
    if state.received_at < stale_before:
        return "stale"
    if dispatched:
        return "dispatched"
    return "plugged_in" if state.plugged_in else "unplugged"


def _window(window: tuple[datetime, datetime] | None) -> dict | None:
    return {"start": window[0], "end": window[1]} if window else None


def _dispatch_window(command: Command) -> dict:
    signal = command.dispatch.signal
    end = min(signal.start_at + timedelta(seconds=signal.duration_s), command.valid_until)
    return {"start": signal.start_at, "end": end}


def _decision(command: Command) -> dict:
    dispatch = command.dispatch
    return {
        "signal_type": dispatch.signal.signal_type,
        "target_power": dispatch.target_kw,
        "vehicles_selected": command.selected,
        "timestamp": dispatch.created_at,
    }
