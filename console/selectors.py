"""What the dashboard shows, read for a set of fleets (fleet/access.py's
rule: None = every fleet; rows of no fleet are seen by all-fleet callers only)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Avg, Count, Max, Q, Sum
from django.utils import timezone

from dispatch.models import OPEN_COMMAND, Command, CommandStatus, FlexibilitySignal, SignalType
from fleet import access
from fleet.models import Vehicle
from kpis.models import VehicleDayKpi
from scheduler import selectors as plan_selectors
from scheduler.models import Plan

MAX_BUCKETS = 72


def _bucket_s(hours: int) -> int:
    return max(60, hours * 3600 // MAX_BUCKETS)


def power_series(fleet_ids, start: dt.datetime, end: dt.datetime, bucket_s: int) -> list[dict]:
    """Average requested and acknowledged power (kW, + = to the grid) per bucket:
    each signal counts over its span (start to the first of its end and its
    validity) for the share of the bucket it covers; acknowledged is the sum of
    its acknowledged setpoints over every round, over the same span."""
    signals = access.filter_fleets(
        FlexibilitySignal.objects.filter(valid_until__gt=start, start_at__lt=end), fleet_ids
    )
    acked = dict(
        Command.objects.filter(dispatch__signal__in=signals.values("id"), status=CommandStatus.ACKED)
        .values("dispatch__signal_id")
        .annotate(kw=Sum("allocated_kw"))
        .values_list("dispatch__signal_id", "kw")
    )
    count = max(1, int((end - start).total_seconds() // bucket_s))
    requested = [0.0] * count
    acknowledged = [0.0] * count
    for signal_id, power, begin, duration, valid_until in signals.values_list(
        "id", "power_kw", "start_at", "duration_s", "valid_until"
    ):
        finish = min(begin + dt.timedelta(seconds=duration), valid_until, end)
        first = max(0, int((begin - start).total_seconds() // bucket_s))
        last = min(count - 1, int((finish - start).total_seconds() // bucket_s))
        for k in range(first, last + 1):
            b0 = start + dt.timedelta(seconds=k * bucket_s)
            overlap = (min(finish, b0 + dt.timedelta(seconds=bucket_s)) - max(begin, b0)).total_seconds()
            if overlap <= 0:
                continue
            share = overlap / bucket_s
            requested[k] += power * share
            acknowledged[k] += (acked.get(signal_id) or 0.0) * share
    return [
        {
            "at": start + dt.timedelta(seconds=k * bucket_s),
            "requested_kw": round(requested[k], 3),
            "acknowledged_kw": round(acknowledged[k], 3),
        }
        for k in range(count)
    ]


def ack_by_signal_type(fleet_ids, start: dt.datetime) -> list[dict]:
    """Per signal type, the commands of the rounds started since ``start``:
    how many, how they ended, the ack rate over the settled ones and the
    publish-to-ack latency of the acked ones."""
    commands = access.filter_fleets(
        Command.objects.filter(dispatch__created_at__gte=start), fleet_ids, "dispatch__signal__fleet_id"
    )
    rows = {
        row["dispatch__signal__signal_type"]: row
        for row in commands.values("dispatch__signal__signal_type").annotate(
            commands=Count("id"),
            acked=Count("id", filter=Q(status=CommandStatus.ACKED)),
            open=Count("id", filter=Q(status__in=OPEN_COMMAND)),
            latency_avg_s=Avg("latency_s", filter=Q(status=CommandStatus.ACKED)),
            latency_max_s=Max("latency_s", filter=Q(status=CommandStatus.ACKED)),
        )
    }
    out = []
    for signal_type in SignalType.values:
        row = rows.get(signal_type)
        if row is None:
            continue
        settled = row["commands"] - row["open"]
        out.append(
            {
                "signal_type": signal_type,
                "commands": row["commands"],
                "acked": row["acked"],
                "open": row["open"],
                "ack_rate": round(row["acked"] / settled, 4) if settled else None,
                "latency_avg_ms": None
                if row["latency_avg_s"] is None
                else round(row["latency_avg_s"] * 1000, 1),
                "latency_max_ms": None
                if row["latency_max_s"] is None
                else round(row["latency_max_s"] * 1000, 1),
            }
        )
    return out


def vehicle_counts(fleet_ids, now: dt.datetime) -> dict:
    """Active vehicles now: how many, online (heard from recently, no Last
    Will since), plugged in (and online), dispatched (a setpoint in force)."""
    fresh = now - dt.timedelta(seconds=settings.V2G.telemetry.stale_after_seconds)
    vehicles = access.filter_fleets(Vehicle.objects.active(), fleet_ids)
    online = Q(state__online=True, state__received_at__gte=fresh)
    counts = vehicles.aggregate(
        total=Count("id"),
        online=Count("id", filter=online),
        plugged_in=Count("id", filter=online & Q(state__plugged_in=True)),
    )
    counts["dispatched"] = (
        Command.objects.filter(
            vehicle__in=vehicles.values("id"),
            valid_until__gt=now,
            dispatch__signal__start_at__lte=now,
            status__in=(*OPEN_COMMAND, CommandStatus.ACKED),
        )
        .values("vehicle_id")
        .distinct()
        .count()
    )
    return counts


def local_today(now: dt.datetime) -> dt.date:
    return now.astimezone(ZoneInfo(settings.V2G.scheduler.time_zone)).date()


def plan_today(fleet_ids, now: dt.datetime) -> dict | None:
    """Today's approved plan (local day) against its delivery, per slot."""
    plan = plan_selectors.plan_for_day(access.filter_fleets(Plan.objects.all(), fleet_ids), local_today(now))
    if plan is None:
        return None
    delivery = plan_selectors.plan_delivery(plan)
    return {
        "plan_id": plan.id,
        "day": plan.day,
        "version": plan.version,
        "fleet_id": plan.fleet_id,
        "slots": [
            {
                "timeslot": row["timeslot"],
                "planned_kw": row["planned_kw"],
                "requested_kw": row["requested_kw"],
                "acknowledged_kw": row["acknowledged_kw"],
                "status": row["status"],
            }
            for row in delivery["slots"]
        ],
    }


def co2_this_week(fleet_ids, now: dt.datetime) -> dict:
    """CO2 avoided and energy injected per local day of this week (Monday to today)."""
    today = local_today(now)
    monday = today - dt.timedelta(days=today.weekday())
    rows = {
        row["day"]: row
        for row in access.filter_fleets(
            VehicleDayKpi.objects.filter(day__gte=monday, day__lte=today), fleet_ids, "vehicle__fleet_id"
        )
        .values("day")
        .annotate(co2=Sum("co2_avoided_g"), injected=Sum("injected_kwh"))
    }
    days = []
    for offset in range((today - monday).days + 1):
        day = monday + dt.timedelta(days=offset)
        row = rows.get(day, {})
        days.append(
            {
                "day": day,
                "co2_avoided_g": round(row.get("co2") or 0.0, 3),
                "injected_kwh": round(row.get("injected") or 0.0, 6),
            }
        )
    return {
        "week_start": monday,
        "days": days,
        "co2_avoided_g": round(sum(d["co2_avoided_g"] for d in days), 3),
        "injected_kwh": round(sum(d["injected_kwh"] for d in days), 6),
    }


def dashboard_summary(fleet_ids, *, hours: int = 6, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    bucket_s = _bucket_s(hours)
    # Buckets on round times, the last one ending at the next boundary after now.
    end = dt.datetime.fromtimestamp((now.timestamp() // bucket_s + 1) * bucket_s, tz=dt.UTC)
    start = end - dt.timedelta(seconds=bucket_s * max(1, hours * 3600 // bucket_s))
    return {
        "generated_at": now,
        "fleets": None if fleet_ids is None else sorted(fleet_ids),
        "window": {"start": start, "end": end, "hours": hours, "bucket_s": bucket_s},
        "power": power_series(fleet_ids, start, end, bucket_s),
        "signal_types": ack_by_signal_type(fleet_ids, start),
        "vehicles": vehicle_counts(fleet_ids, now),
        "plan": plan_today(fleet_ids, now),
        "co2": co2_this_week(fleet_ids, now),
    }
