"""``python manage.py signal_submit --type FCR --power-kw 20 --duration-s 300 [--wait]``"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from dispatch import selectors, services
from dispatch.models import SignalSource, SignalType
from v2g_project.payloads import PayloadError, iso_datetime


def _when(text: str) -> datetime:
    try:
        return iso_datetime(text, "time")
    except PayloadError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("time ", "", 1)) from None


class Command(BaseCommand):
    help = "Submit a flexibility signal (positive kW = to the grid) and print its dispatch id."

    def add_arguments(self, parser):
        parser.add_argument("--type", dest="signal_type", required=True, choices=SignalType.values)
        parser.add_argument("--power-kw", type=float, required=True, help="Signed: + discharge, - charge.")
        parser.add_argument("--duration-s", type=float, required=True)
        parser.add_argument("--start-at", type=_when, help="ISO 8601 with offset (default now).")
        parser.add_argument(
            "--valid-until", type=_when, help="ISO 8601 with offset (default start + duration)."
        )
        parser.add_argument("--fleet", dest="fleet_id", help="Only this fleet's vehicles.")
        parser.add_argument(
            "--external-id", default="", help="Dedupe key: resubmitting it returns the first."
        )
        parser.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="Wait for the outcome.")

    def handle(self, *args, wait: float, **options):
        try:
            fields = (
                "signal_type",
                "power_kw",
                "duration_s",
                "start_at",
                "valid_until",
                "fleet_id",
                "external_id",
            )
            signal, dispatch = services.signal_submit(
                source=SignalSource.CLI, **{name: options[name] for name in fields}
            )
        except services.SignalRejected as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"signal {signal.id}\ndispatch {dispatch.id}")
        if not wait:
            return
        deadline = time.monotonic() + wait
        while True:
            detail = selectors.dispatch_detail(dispatch.id)
            if detail["status"] != "in_progress" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        acked = sum(1 for c in detail["commands"] if c["status"] == "acked")
        commands, rounds = len(detail["commands"]), len(detail["rounds"])
        self.stdout.write(
            f"status {detail['status']}: {detail['acknowledged_kw']:.1f} of {detail['requested_kw']:.1f} kW "
            f"acknowledged, {acked}/{commands} command(s) acked in {rounds} round(s)"
        )
