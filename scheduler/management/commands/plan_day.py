"""``python manage.py plan_day [--day YYYY-MM-DD] [--fleet F]``: plan a delivery day now."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from scheduler import services
from scheduler.models import PlanSource


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = (
        "Plan a NEBEF delivery day (a local date of scheduler.time_zone) as a new draft version, "
        "or show the version the same inputs already made."
    )

    def add_arguments(self, parser):
        parser.add_argument("--day", type=_day, help="Delivery day, YYYY-MM-DD (default: tomorrow, local).")
        parser.add_argument("--fleet", dest="fleet_id", help="Only this fleet's vehicles (default: all).")

    def handle(self, *args, day: date | None, fleet_id: str | None, **options):
        if day is None:
            local = timezone.now().astimezone(ZoneInfo(settings.V2G.scheduler.time_zone))
            day = local.date() + timedelta(days=1)
        try:
            outcome = services.plan_day(day, fleet_id=fleet_id, source=PlanSource.COMMAND)
        except services.PlanError as exc:
            raise CommandError(str(exc)) from None
        plan = outcome.plan
        verb = "created" if outcome.created else "unchanged (same inputs)"
        self.stdout.write(
            f"plan {plan.day} v{plan.version} ({plan.status}) {verb}: id {plan.id}\n"
            f"  {plan.vehicle_count} vehicle(s) planned, {len(plan.excluded)} left out, "
            f"{plan.entry_count} entries in {plan.slot_count} slots of {plan.slot_minutes} min\n"
            f"  target {plan.target_kwh:.1f} kWh, planned {plan.planned_kwh:.1f} kWh, "
            f"shortfall {plan.shortfall_kwh:.1f} kWh\n"
            f"  solver {plan.solver_status}, gap {plan.gap}, {plan.solve_s or 0:.2f} s"
        )
        for message in plan.messages[:10]:
            self.stdout.write(f"  note: {message}")
        if len(plan.messages) > 10:
            self.stdout.write(f"  ... {len(plan.messages) - 10} more note(s) in the admin")
