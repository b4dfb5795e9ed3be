"""Reads of dispatch state for the API, the CLI and the admin."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, OuterRef, QuerySet, Subquery

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus
from dispatch.services import POWER_EPSILON_KW, signal_acknowledged_kw
from fleet.models import Vehicle
from telemetry import prediction
from telemetry import services as telemetry_services


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


STATUS_COLUMNS = (
    *("id", "battery_kwh", "max_charge_kw", "max_discharge_kw", "min_soc", "target_soc", "departure_at"),
    *("state__soc", "state__plugged_in", "state__power_kw", "state__online", "state__reported_at"),
    *("state__received_at", "plug_profile__tz_key", "plug_profile__prob", "plug_profile__covered_s"),
    "last_command",
)


def status_rows(vehicles: QuerySet[Vehicle]) -> QuerySet:
    """The vehicles as ``vehicle_statuses`` reads them: registry, latest state,
    learned profile and latest command id in one query (joins and one indexed
    lookup per vehicle), not one ``IN (...)`` list of 10,000 ids per table."""
    return vehicles.annotate(
        last_command=Subquery(
            Command.objects.filter(vehicle=OuterRef("pk")).order_by("-valid_until").values("id")[:1]
        )
    ).values_list(*STATUS_COLUMNS)


def vehicle_statuses(rows: Sequence[tuple], now: datetime) -> list[dict]:
    """Per vehicle (``rows`` from :func:`status_rows`): current status, forecast
    plug-in window and SoC, the next dispatch window and the last dispatch
    decision; two queries whatever the page size. Forecasts come from the
    learned profiles (``telemetry.learn_profiles``), not the history, so a
    10,000-vehicle page reads 2 MB of profiles, not weeks of states."""
    cfg = settings.V2G.telemetry
    engine = telemetry_services.prediction_engine()
    learns = isinstance(engine, prediction.HistoryEngine)
    commands = _commands([r[-1] for r in rows if r[-1] is not None], now)
    stale_before = now - timedelta(seconds=cfg.stale_after_seconds)
    facts, profiles, found = [], [], []
    for (
        vid, battery, charge, discharge, min_soc, target, departure,
        soc, plugged, power, online, reported_at, received_at, tz_key, prob, covered_s, command_id,
    ) in rows:  # fmt: skip
        command = commands.get(command_id)
        in_force = command is not None and command["in_force"]
        acked = in_force and command["status"] == CommandStatus.ACKED
        facts.append(
            prediction.VehicleFacts(
                vehicle_id=vid, battery_kwh=battery, max_charge_kw=charge, max_discharge_kw=discharge,
                min_soc=min_soc, target_soc=target, departure_at=departure,
                latest=prediction.Sample(reported_at, soc, plugged, power) if reported_at else None,
                setpoint_kw=command["power_kw"] if acked else 0.0,
                setpoint_until=command["valid_until"] if in_force else None,
            )
        )  # fmt: skip
        profiles.append(
            prediction.PlugProfile.from_bytes(tz_key, bytes(prob), covered_s) if learns and prob else None
        )
        if reported_at is None:
            status = "unknown"
        elif not online:
            status = "offline"
        elif received_at < stale_before:
            status = "stale"
        else:
            status = "dispatched" if acked else ("plugged_in" if plugged else "unplugged")
        found.append((vid, status, command, in_force))
    forecasts = engine.forecast_many(facts, profiles, now, STATUS_OFFSETS_MIN)
    return [
        {
            "vehicle_id": vid,
            "current_status": status,
            "forecasted_plugin_window": _window(forecast.plugin_window),
            "forecasted_soc": {f"t+{m}m": round(soc, 4) for m, soc in forecast.soc.items()},
            "next_dispatch_window": command["window"] if in_force else None,
            "last_dispatch_decision": command["decision"] if command else None,
        }
        for (vid, status, command, in_force), forecast in zip(found, forecasts, strict=True)
    ]


def _commands(command_ids: list, now: datetime) -> dict:
    """Command id -> what the status shows of it: whether it is in force, the
    dispatch window still ahead, and the decision it was part of."""
    if not command_ids:
        return {}
    rows = Command.objects.filter(id__in=command_ids).values(
        "id", "status", "power_kw", "valid_until", "dispatch_id", "dispatch__target_kw",
        "dispatch__created_at", "dispatch__signal__signal_type", "dispatch__signal__start_at",
        "dispatch__signal__duration_s",
    )  # fmt: skip
    rows = list(rows)
    selected = dict(
        Command.objects.filter(dispatch_id__in={c["dispatch_id"] for c in rows})
        .values("dispatch_id")
        .annotate(n=Count("id"))
        .values_list("dispatch_id", "n")
    )
    found = {}
    for c in rows:
        signal_end = c["dispatch__signal__start_at"] + timedelta(seconds=c["dispatch__signal__duration_s"])
        found[c["id"]] = {
            "status": c["status"],
            "power_kw": c["power_kw"],
            "valid_until": c["valid_until"],
            "in_force": c["status"] in OPEN_OR_ACKED and c["valid_until"] > now,
            "window": {"start": c["dispatch__signal__start_at"], "end": min(signal_end, c["valid_until"])},
            "decision": {
                "signal_type": c["dispatch__signal__signal_type"],
                "target_power": c["dispatch__target_kw"],
                "vehicles_selected": selected.get(c["dispatch_id"], 0),
                "timestamp": c["dispatch__created_at"],
            },
        }
    return found


OPEN_OR_ACKED = (CommandStatus.ACKED, CommandStatus.PUBLISHED, CommandStatus.PENDING)


def _window(window: tuple[datetime, datetime] | None) -> dict | None:
    return {"start": window[0], "end": window[1]} if window else None
