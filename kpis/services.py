"""Recompute the stored KPIs (SPEC §10) from the acknowledged commands and,
where it covers the time, the telemetry history (see kpis.domain).

The Command table is authoritative for commands (the dispatch log is written
from it when a round is final). A day is recomputed in one transaction: its
rows are upserted and rows of vehicles with no energy any more are deleted, so
recomputing is idempotent and an interrupted range resumes by running it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from dispatch.models import Command, CommandStatus
from fleet.models import Vehicle
from kpis import domain
from kpis.models import VehicleDayKpi
from telemetry.models import VehicleStateHistory

FIELDS = ("injected_kwh", "consumed_kwh", "co2_avoided_g", "energy_ratio", "measured_share", "computed_at")
# Vehicles whose telemetry is loaded and computed at once (bounds the memory).
VEHICLE_CHUNK = 500


def time_zone() -> ZoneInfo:
    return ZoneInfo(settings.V2G.scheduler.time_zone)


def local_today(now: dt.datetime | None = None) -> dt.date:
    return (now or timezone.now()).astimezone(time_zone()).date()


@lru_cache(maxsize=4)
def _factors(path: str, mtime_ns: int) -> dict[dt.datetime, float]:
    return domain.read_marginal_factors(Path(path))


def marginal_factors() -> dict[dt.datetime, float] | None:
    """The configured marginal factor series (metrics.emission_factor_csv), or
    None for the flat factor; re-read when the file changes. A bad file raises
    domain.FactorFileError naming the file and line."""
    name = settings.V2G.metrics.emission_factor_csv
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute():
        path = Path(settings.BASE_DIR) / path
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise domain.FactorFileError(f"{path}: cannot read the emission factor file: {exc.strerror}") from exc
    return _factors(str(path), mtime)


def _acked_commands(
    start_at: dt.datetime, end_at: dt.datetime, fleet_id: str | None
) -> list[domain.AckedCommand]:
    """Acknowledged commands that may be in force in [start_at, end_at), and the
    ones acknowledged since the earliest of them (which may supersede them)."""
    acked = Command.objects.filter(status=CommandStatus.ACKED, acked_at__isnull=False, acked_at__lt=end_at)
    if fleet_id is not None:
        acked = acked.filter(vehicle__fleet_id=fleet_id)
    since = acked.filter(valid_until__gt=start_at).aggregate(at=Min("acked_at"))["at"]
    if since is None:
        return []
    rows = acked.filter(acked_at__gte=since).values_list(
        "vehicle_id",
        "power_kw",
        "acked_at",
        "valid_until",
        "dispatch__signal__start_at",
        "dispatch__signal__duration_s",
    )
    return [
        domain.AckedCommand(
            vehicle_id=vehicle_id,
            power_kw=power_kw,
            acked_at=acked_at,
            signal_start_at=signal_start,
            signal_end_at=signal_start + dt.timedelta(seconds=duration_s),
            valid_until=valid_until,
        )
        for vehicle_id, power_kw, acked_at, valid_until, signal_start, duration_s in rows
    ]


def _samples(vehicle_ids: list[str], start_at: dt.datetime, end_at: dt.datetime) -> list[domain.Sample]:
    """The vehicles' reported powers of [start_at - MAX_SAMPLE_GAP, end_at) (a
    sample just before the day still holds into it)."""
    rows = VehicleStateHistory.objects.filter(
        vehicle_id__in=vehicle_ids,
        reported_at__gte=start_at - domain.MAX_SAMPLE_GAP,
        reported_at__lt=end_at,
    ).values_list("vehicle_id", "reported_at", "power_kw")
    return [domain.Sample(*row) for row in rows]


def kpis_compute_day(day: dt.date, *, fleet_id: str | None = None, now: dt.datetime | None = None) -> int:
    """Recompute one local day's KPIs (every vehicle, or one fleet's); returns
    the number of rows stored."""
    tz = time_zone()
    start_at, end_at = domain.local_day_bounds(day, tz)
    commands = _acked_commands(start_at, end_at, fleet_id)
    by_vehicle: dict[str, list[domain.AckedCommand]] = {}
    for command in commands:
        by_vehicle.setdefault(command.vehicle_id, []).append(command)
    vehicles = Vehicle.objects.all()
    if fleet_id is not None:
        vehicles = vehicles.filter(fleet_id=fleet_id)
    vehicle_ids = sorted(set(vehicles.values_list("id", flat=True)) | set(by_vehicle))
    factors = marginal_factors()
    kpis: dict[tuple[str, dt.date], domain.DayKpi] = {}
    for i in range(0, len(vehicle_ids), VEHICLE_CHUNK):
        chunk = vehicle_ids[i : i + VEHICLE_CHUNK]
        kpis.update(
            domain.daily_kpis(
                [command for vid in chunk for command in by_vehicle.get(vid, [])],
                tz=tz,
                emission_factor=settings.V2G.metrics.emission_factor,
                marginal_factors=factors,
                samples=_samples(chunk, start_at, end_at),
            )
        )
    now = now or timezone.now()
    rows = [
        VehicleDayKpi(
            vehicle_id=vehicle_id,
            day=day,
            injected_kwh=round(kpi.injected_kwh, 6),
            consumed_kwh=round(kpi.consumed_kwh, 6),
            co2_avoided_g=round(kpi.co2_avoided_g, 3),
            energy_ratio=kpi.energy_ratio,
            measured_share=round(kpi.measured_share, 4),
            computed_at=now,
        )
        for (vehicle_id, kpi_day), kpi in sorted(kpis.items())
        if kpi_day == day
    ]
    with transaction.atomic():
        stale = VehicleDayKpi.objects.filter(day=day).exclude(vehicle_id__in=[row.vehicle_id for row in rows])
        if fleet_id is not None:
            stale = stale.filter(vehicle__fleet_id=fleet_id)
        stale.delete()
        if rows:
            VehicleDayKpi.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["vehicle", "day"], update_fields=list(FIELDS)
            )
    return len(rows)


def days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def kpis_compute_range(
    start: dt.date, end: dt.date, *, fleet_id: str | None = None, now: dt.datetime | None = None
) -> int:
    """Recompute every day of [start, end], each committed on its own."""
    return sum(kpis_compute_day(day, fleet_id=fleet_id, now=now) for day in days(start, end))


def kpis_compute_recent(*, days_back: int = 1, now: dt.datetime | None = None) -> dict:
    """The Beat job: recompute today and the ``days_back`` days before it."""
    today = local_today(now)
    start = today - dt.timedelta(days=days_back)
    return {
        "start": start.isoformat(),
        "end": today.isoformat(),
        "rows": kpis_compute_range(start, today, now=now),
    }
