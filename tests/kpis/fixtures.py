"""Acknowledged commands in the database, for the KPI tests."""

from __future__ import annotations

import datetime as dt

from dispatch.models import Command, CommandStatus, Dispatch, FlexibilitySignal
from fleet.models import Fleet, Vehicle


def vehicle(vid: str, fleet_id: str = "f1") -> Vehicle:
    fleet, _ = Fleet.objects.get_or_create(id=fleet_id, defaults={"name": fleet_id})
    return Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=11, max_discharge_kw=11)


def command(
    vehicle_id: str,
    power_kw: float,
    start: str,
    duration_s: float,
    acked: str | None = None,
    status: str = CommandStatus.ACKED,
) -> Command:
    start_at = dt.datetime.fromisoformat(start)
    end_at = start_at + dt.timedelta(seconds=duration_s)
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=power_kw, start_at=start_at, duration_s=duration_s, valid_until=end_at
    )
    dispatch = Dispatch.objects.create(signal=signal, target_kw=power_kw)
    return Command.objects.create(
        dispatch=dispatch,
        vehicle_id=vehicle_id,
        power_kw=power_kw,
        allocated_kw=power_kw,
        status=status,
        valid_until=end_at,
        acked_at=dt.datetime.fromisoformat(acked) if acked else start_at,
    )


def telemetry(vehicle_id: str, power_kw: float, start: str, minutes: int, step_min: int = 5) -> None:
    """Reported states every ``step_min`` minutes over [start, start + minutes)."""
    from telemetry.models import VehicleStateHistory

    first = dt.datetime.fromisoformat(start)
    VehicleStateHistory.objects.bulk_create(
        VehicleStateHistory(
            vehicle_id=vehicle_id,
            soc=0.5,
            plugged_in=True,
            power_kw=power_kw,
            reported_at=first + dt.timedelta(minutes=m),
            received_at=first + dt.timedelta(minutes=m),
            source="push",
        )
        for m in range(0, minutes, step_min)
    )
