"""The Prometheus exposition endpoint, aggregating every process's metrics.

Settings puts prometheus-client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR):
web, each Celery worker child and the bridge write their samples to files in
one directory; a scrape of /metrics here reads them all. The per-vehicle KPI
gauges are not in those files: they are read from the stored KPIs at scrape time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess


@require_GET
def metrics_view(_request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.PROMETHEUS_MULTIPROC_DIR))
    # The KPI gauges are read from the database at each scrape (see kpis/metrics.py).
    from kpis.metrics import KpiCollector

    registry.register(KpiCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def multiproc_dir_wipe(path: Path) -> None:
    """Start from zero: call before any platform process starts, never while they run."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges (worker child shutdown)."""
    multiprocess.mark_process_dead(pid, path=str(settings.PROMETHEUS_MULTIPROC_DIR))
