"""Tasks for tests/integration/test_scale.py, loaded by its workers
(``--include``). Named under ``kpis.`` and ``dispatch.`` so that the platform's
own routes (v2g_project/queues.py) give them the queue and priority of a KPI
backfill and of a dispatch task."""

from __future__ import annotations

import time
from pathlib import Path

from celery import shared_task


# acks_late like the real KPI and planning tasks: a running one counts against
# the worker's prefetch, so nothing more is reserved behind it.
@shared_task(name="kpis.test_busy", ignore_result=False, acks_late=True)
def busy(release_file: str, max_s: float = 60.0) -> dict:
    """Hold this worker process like a long backfill would, until the test
    creates ``release_file`` (or ``max_s`` passes)."""
    started, clock = time.time(), time.monotonic()
    while not Path(release_file).exists() and time.monotonic() - clock < max_s:
        time.sleep(0.05)
    return {"started": started, "held_s": time.monotonic() - clock}


@shared_task(name="dispatch.test_mark", ignore_result=False, acks_late=True)
def mark() -> float:
    """When a dispatch-class task ran."""
    return time.time()
