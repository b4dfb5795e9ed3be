"""``python manage.py kpis_backfill --start YYYY-MM-DD --end YYYY-MM-DD [--fleet F]``:
(re)compute the ecological KPIs of a range of local days.

Day by day, each day committed on its own, with a progress bar. Recomputing is
idempotent (a day's rows are replaced) and cheap, so an interrupted run is
resumed by running it again (or from the day it stopped at, which it prints).
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from fleet.models import Fleet
from kpis import domain, services

MAX_DAYS = 3660


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text) if len(text) == 10 else date.fromisoformat("x")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Recompute per-vehicle daily KPIs (energy, CO2, ratio) for local days start..end, inclusive."

    def add_arguments(self, parser):
        parser.add_argument("--start", type=_day, required=True, help="First local day, YYYY-MM-DD.")
        parser.add_argument("--end", type=_day, help="Last local day, YYYY-MM-DD (default: --start).")
        parser.add_argument("--fleet", dest="fleet_id", help="Only this fleet's vehicles (default: all).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(
        self, *args, start: date, end: date | None, fleet_id: str | None, no_progress: bool, **options
    ):
        end = end or start
        if end < start:
            raise CommandError(f"--end {end} is before --start {start}")
        if (end - start).days + 1 > MAX_DAYS:
            raise CommandError(f"--start..--end spans more than {MAX_DAYS} days")
        if fleet_id is not None and not Fleet.objects.filter(id=fleet_id).exists():
            raise CommandError(f"--fleet: no fleet {fleet_id!r}")
        try:
            services.marginal_factors()
        except domain.FactorFileError as exc:
            raise CommandError(f"metrics.emission_factor_csv: {exc}") from None
        count = (end - start).days + 1
        rows = 0
        bar = tqdm(total=count, unit="day", disable=no_progress, file=self.stderr._out)
        day = start
        try:
            for day in services.days(start, end):
                bar.set_postfix_str(day.isoformat())
                rows += services.kpis_compute_day(day, fleet_id=fleet_id)
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            raise CommandError(f"interrupted at {day}; resume with --start {day}") from None
        bar.close()
        last = start + timedelta(days=count - 1)
        self.stdout.write(f"KPIs recomputed for {count} day(s), {start}..{last}: {rows} vehicle-day row(s)")
