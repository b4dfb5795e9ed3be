"""The Prometheus exposition endpoint, aggregating every process's metrics.

Settings puts prometheus-client in multiprocess mode (v2g_project/multiproc.py):
web, each Celery worker process, Beat and the bridge write their samples to
files in one directory; a scrape of /metrics here reads them all. Read at
scrape time instead, by collectors on this view's registry: the per-vehicle
KPI gauges (from the stored KPIs, kpis/metrics.py) and the Celery queue depth
(from the broker, v2g_project/celery_metrics.py). docs/metrics.md lists every
metric and how to run this in production.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from v2g_project import multiproc

log = logging.getLogger(__name__)


def registry_build() -> CollectorRegistry:
    """Everything /metrics exposes: every process's files plus the scrape-time collectors."""
    from kpis.metrics import KpiCollector
    from v2g_project.celery_metrics import QueueDepthCollector

    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
    # A process that died without a word (SIGKILL, OOM) must not leave its live gauges.
    multiproc.dead_live_gauges_drop(path)
    registry = CollectorRegistry()
    _MultiProcessCollector(registry, path=str(path))
    registry.register(KpiCollector())
    registry.register(QueueDepthCollector())
    return registry


class _MultiProcessCollector(multiprocess.MultiProcessCollector):
    """Tolerates a file that disappears between listing and reading (a short
    process dropping its idle files at exit, metrics_reset --force): read again."""

    def collect(self):
        for attempt in range(3):
            try:
                return super().collect()
            except FileNotFoundError:
                if attempt == 2:
                    raise
        return []


@require_GET
def metrics_view(_request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(registry_build()), content_type=CONTENT_TYPE_LATEST)


def multiproc_dir_wipe(path: Path) -> bool:
    """Start from zero, before starting the platform's processes (the demo does;
    production runs ``manage.py metrics_reset``). Left as it is, with a warning,
    while other processes still write there (another demo, a test session):
    deleting their files would make their metrics vanish. True if wiped."""
    live = multiproc.live_processes(path)
    if live:
        log.warning(
            "metrics directory %s not wiped: %d other process(es) still write there (%s)",
            path,
            len(live),
            ", ".join(live[:5]),
        )
        return False
    multiproc.wipe(path)
    return True


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges (worker child shutdown, bridge exit)."""
    multiproc.process_dead(pid, Path(settings.PROMETHEUS_MULTIPROC_DIR))
