"""``python manage.py api_token_create --name N --fleet F [--fleet G | --all-fleets] [--expires-days D]``

Prints the token alone on standard output (``TOKEN=$(python manage.py
api_token_create ...)``), once: only its hash is stored.
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from fleet import services


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 < days <= 36_500:
        raise argparse.ArgumentTypeError("must be above 0 and at most 36500 days")
    return days


class Command(BaseCommand):
    help = "Issue an API token for some fleets or all of them; prints it once (only its hash is kept)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who or what uses the token.")
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument(
            "--fleet", dest="fleets", action="append", metavar="FLEET_ID", help="A fleet it may see (repeat)."
        )
        scope.add_argument("--all-fleets", action="store_true", help="Every fleet, present and future.")
        parser.add_argument(
            "--expires-days", type=_days, metavar="DAYS", help="Expires after DAYS days (default never)."
        )

    def handle(self, *args, name: str, fleets: list[str] | None, all_fleets: bool, expires_days, **options):
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        try:
            token, plaintext = services.api_token_create(
                name=name, fleet_ids=fleets or (), all_fleets=all_fleets, expires_at=expires_at
            )
        except services.TokenRejected as exc:
            raise CommandError(str(exc)) from None
        scope = "all fleets" if token.all_fleets else ", ".join(sorted(fleets or ()))
        expiry = f"expires {token.expires_at.isoformat()}" if token.expires_at else "never expires"
        self.stderr.write(f"API token {token.name!r} (v2g_{token.prefix}_…) for {scope}, {expiry}.")
        self.stderr.write("It is shown this once; use it as: Authorization: Bearer <token>")
        self.stdout.write(plaintext)
