"""Empty the Prometheus multiprocess directory: ``python manage.py metrics_reset``.

Run it once when the platform starts, before web, worker, Beat and bridge
(``make demo`` / ``manage.py demo`` does it itself): counters of processes of
an earlier run would otherwise be added to the new ones, and their gauges stay.
It refuses while a platform process is running (each holds a lock in the
directory, see v2g_project/multiproc.py): a running process whose files are
deleted keeps writing to the deleted files, and its metrics vanish from
/metrics until it restarts. ``--force`` wipes anyway (exit 0 either way
with ``--if-idle``, which only wipes when nothing runs).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from v2g_project import multiproc


class Command(BaseCommand):
    help = "Empty the Prometheus multiprocess directory (metrics.multiproc_dir) before the platform starts."

    def add_arguments(self, parser):
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--force", action="store_true", help="Wipe even while platform processes run.")
        mode.add_argument(
            "--if-idle",
            action="store_true",
            help="Wipe only if no platform process runs; otherwise leave it and exit 0 "
            "(for an entrypoint that may run again while the platform is up).",
        )

    def handle(self, *args, force: bool, if_idle: bool, **options):
        path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
        live = multiproc.live_processes(path)
        if live and not force:
            message = (
                f"{len(live)} platform process(es) still write metrics to {path} "
                f"({', '.join(live[:5])}{', ...' if len(live) > 5 else ''})"
            )
            if if_idle:
                self.stdout.write(f"metrics directory kept: {message}")
                return
            raise CommandError(f"{message}; stop them first, or pass --force")
        removed = multiproc.wipe(path)
        self.stdout.write(f"metrics directory {path} emptied ({removed} files removed)")
