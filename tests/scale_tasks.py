"""Tasks for tests/integration/test_scale.py, loaded by its background worker
(``--include``). Named under ``kpis.`` so the platform's own routes
(v2g_project/queues.py) send them where a KPI backfill goes."""

from __future__ import annotations

import time
from pathlib import Path

from celery import shared_task


@shared_task(name="kpis.test_busy", ignore_result=False)
def busy(release_file: str, max_s: float = 60.0) -> float:
    """Hold this worker process like a long backfill would, until the test
    creates ``release_file`` (or ``max_s`` passes); returns the time held."""
    started = time.monotonic()
    while not Path(release_file).exists() and time.monotonic() - started < max_s:
        time.sleep(0.05)
    return time.monotonic() - started
