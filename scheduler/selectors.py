"""Reads of plans for the API, the admin and the CLI: a day's plan, its slots,
and delivery against plan."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from zoneinfo import ZoneInfo

from django.db.models import Count, QuerySet

from dispatch.models import Dispatch, FlexibilitySignal, SignalSource
from dispatch.selectors import signal_status
from scheduler.models import Plan, PlanEntry, PlanStatus
from scheduler.services import signal_external_id, slot_starts_of


def plan_for_day(plans: QuerySet[Plan], day: date, version: int | None = None) -> Plan | None:
    """The day's approved plan, or its version ``version`` whatever its status."""
    plans = plans.filter(day=day)
    if version is None:
        return plans.filter(status=PlanStatus.APPROVED).first()
    return plans.filter(version=version).first()


def slot_labels(plan: Plan) -> list[str]:
    """Each slot's start in ISO 8601 with the local offset of the plan's zone,
    e.g. ``2025-10-26T02:00:00+02:00`` then ``2025-10-26T02:00:00+01:00``."""
    tz = ZoneInfo(plan.time_zone)
    return [start.astimezone(tz).isoformat() for start in slot_starts_of(plan)]


def plan_slots(plan: Plan) -> list[dict]:
    """Per slot: start, target, planned and shortfall power (kW), and how many
    vehicles the plan uses in it."""
    counts = dict(
        PlanEntry.objects.filter(plan=plan)
        .values("slot")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("slot", "n")
    )
    return [
        {
            "slot": k,
            "timeslot": label,
            "target_kw": plan.target_kw[k],
            "planned_kw": plan.planned_kw[k],
            "shortfall_kw": plan.shortfall_kw[k],
            "vehicles": counts.get(k, 0),
        }
        for k, label in enumerate(slot_labels(plan))
    ]


def plan_delivery(plan: Plan) -> dict:
    """Delivery against plan, per slot: the planned power, what was requested
    from the fleet (the slot's NEBEF signal), allocated to vehicles and
    acknowledged by them (all dispatch rounds, fallback included), and the
    outcome: ``not_executed`` (no signal: not approved then, nothing planned,
    or not yet due), ``in_progress``, ``completed``, ``partial``, ``failed``,
    ``no_vehicles``. Totals in kWh over the executed slots."""
    external = {signal_external_id(plan, k): k for k in range(plan.slot_count)}
    signals = {
        external[ext]: (sid, power)
        for sid, ext, power in FlexibilitySignal.objects.filter(
            source=SignalSource.PLAN, external_id__in=list(external)
        ).values_list("id", "external_id", "power_kw")
    }
    rounds: dict = defaultdict(list)
    for dispatch in Dispatch.objects.filter(signal_id__in=[sid for sid, _p in signals.values()]).order_by(
        "signal_id", "round"
    ):
        rounds[dispatch.signal_id].append(dispatch)
    hours = plan.slot_minutes / 60
    slots, requested_kwh, acknowledged_kwh, planned_kwh = [], 0.0, 0.0, 0.0
    for k, label in enumerate(slot_labels(plan)):
        row = {
            "slot": k,
            "timeslot": label,
            "planned_kw": plan.planned_kw[k],
            "requested_kw": None,
            "allocated_kw": None,
            "acknowledged_kw": None,
            "status": "not_executed",
            "signal_id": None,
            "dispatch_id": None,
        }
        if k in signals:
            signal_id, power = signals[k]
            signal_rounds = rounds.get(signal_id, [])
            allocated = round(sum(r.allocated_kw for r in signal_rounds), 3)
            acknowledged = round(sum(r.acknowledged_kw for r in signal_rounds), 3)
            row.update(
                requested_kw=power,
                allocated_kw=allocated,
                acknowledged_kw=acknowledged,
                status=signal_status(signal_rounds, power, acknowledged) if signal_rounds else "in_progress",
                signal_id=str(signal_id),
                dispatch_id=str(signal_rounds[0].id) if signal_rounds else None,
            )
            planned_kwh += plan.planned_kw[k] * hours
            requested_kwh += power * hours
            acknowledged_kwh += acknowledged * hours
        slots.append(row)
    return {
        "plan_id": str(plan.id),
        "day": plan.day.isoformat(),
        "version": plan.version,
        "status": plan.status,
        "executed_slots": len(signals),
        "planned_kwh": round(planned_kwh, 3),
        "requested_kwh": round(requested_kwh, 3),
        "acknowledged_kwh": round(acknowledged_kwh, 3),
        "slots": slots,
    }
