"""Shared set-up of the scheduler tests: vehicles with a latest state and a
learned plug-in profile, and plans stored from hand-made planner results."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import numpy as np
from django.conf import settings

from fleet.models import Fleet, Vehicle
from scheduler import domain, services
from scheduler.models import Plan
from telemetry import prediction
from telemetry.models import PlugProfile, VehicleState
from tests.conftest import replace

DAY = date(2025, 6, 3)  # a Tuesday; Paris is UTC+2
NOW = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)  # the Monday before, 12:00 in Paris: the D+1 run


def scheduler_config(settings_fixture, **changes) -> None:
    """Change some ``scheduler`` keys for one test (``settings`` is pytest-django's fixture)."""
    v2g = settings_fixture.V2G
    settings_fixture.V2G = replace(v2g, scheduler=replace(v2g.scheduler, **changes))


def commuter_profile(leave: int = 30, back: int = 72) -> np.ndarray:
    """Plugged in on weekdays before quarter-hour ``leave`` and from ``back``; always at weekends."""
    prob = np.ones((2, 96))
    prob[0, leave:back] = 0.0
    return prob


def vehicle(
    vid: str,
    fleet: Fleet,
    *,
    soc: float | None = 0.8,
    profile: np.ndarray | None = None,
    covered_days: float = 14.0,
    departure_at: datetime | None = None,
    **fields,
) -> Vehicle:
    fields = {"battery_kwh": 60.0, "max_charge_kw": 11.0, "max_discharge_kw": 10.0, **fields}
    v = Vehicle.objects.create(id=vid, fleet=fleet, departure_at=departure_at, **fields)
    if soc is not None:
        VehicleState.objects.create(
            vehicle=v, soc=soc, plugged_in=True, reported_at=NOW - timedelta(minutes=5), received_at=NOW
        )
    if profile is not None:
        tz = settings.V2G.scheduler.time_zone
        learned = prediction.PlugProfile(tz_key=tz, prob=profile, covered_s=covered_days * 86400)
        PlugProfile.objects.create(
            vehicle=v, tz_key=tz, prob=learned.to_bytes(), covered_s=learned.covered_s, learned_at=NOW
        )
    return v


def stored_plan(
    day: date,
    entries: dict[tuple[int, str], float],
    *,
    slot_minutes: int = 15,
    target_kw: float = 10.0,
    fleet_id: str | None = None,
) -> Plan:
    """A plan stored from a hand-made planner result: ``entries`` (slot, vehicle) -> kW,
    for every fleet or for ``fleet_id``."""
    slot_starts = domain.day_slots(day, settings.V2G.scheduler.time_zone, slot_minutes)
    n = len(slot_starts)
    inp = domain.PlanInput(
        slot_starts=slot_starts, slot_minutes=slot_minutes, target_kw=(target_kw,) * n, vehicles=()
    )
    planned = [0.0] * n
    for (slot, _vid), kw in entries.items():
        planned[slot] += kw
    result = domain.PlanResult(
        entries=tuple(domain.PlanEntry(vid, slot, kw) for (slot, vid), kw in sorted(entries.items())),
        planned_kw=tuple(planned),
        shortfall_kw=tuple(max(0.0, target_kw - p) for p in planned),
        status="optimal",
        objective=12.5,
        gap=0.0,
        solve_s=0.25,
    )
    digest = hashlib.sha256(repr(sorted(entries.items())).encode() + day.isoformat().encode()).hexdigest()
    return services.plan_store(day, inp, result, fleet_id=fleet_id, digest=digest).plan
