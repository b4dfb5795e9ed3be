"""``python manage.py telemetry_poll [--timeout-s 5] [--wait]``: a manual pull round."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from telemetry.models import TelemetryPoll
from telemetry.tasks import telemetry_poll_task


class Command(BaseCommand):
    help = (
        "Run one pull round now, whatever telemetry.mode says (through a worker, like Beat's). "
        "Refused while another round is open."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--timeout-s", type=float, help="Wait for answers this long (default telemetry.timeout_seconds)."
        )
        parser.add_argument("--wait", action="store_true", help="Wait for the round to finish and print it.")

    def handle(self, *args, timeout_s: float | None, wait: bool, **options):
        if timeout_s is not None and not 0 < timeout_s <= 600:
            raise CommandError("--timeout-s must be >0 and <=600")
        try:
            result = telemetry_poll_task.delay(force=True, timeout_s=timeout_s).get(timeout=30)
        except Exception as exc:  # noqa: BLE001 - no worker, broker down: say so, no traceback
            raise CommandError(f"the poll task did not run: {exc}") from None
        if result["outcome"] != "started":
            raise CommandError(f"pull round {result['outcome']}")
        self.stdout.write(f"pull round {result['poll_id']} started")
        if wait:
            import time

            poll = TelemetryPoll.objects.get(id=result["poll_id"])
            while poll.status == "collecting":
                time.sleep(0.5)  # a human waiting at a terminal, not a test
                poll.refresh_from_db()
            self.stdout.write(f"{poll.status}: {poll.answered} answered, {poll.timed_out} timed out")
