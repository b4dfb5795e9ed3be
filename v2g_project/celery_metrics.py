"""Celery metrics: task counters and runtime from Celery signals, queue depth
read from the broker when /metrics is scraped.

The signal handlers are connected in v2g_project/celery.py; each runs in the
process where its event happens, and multiprocess mode adds them up on the web
``/metrics``:

- ``celery_tasks_sent_total{task}``: published to the broker, by whichever
  process sent it (web, Beat, a worker child chaining another task);
- ``celery_tasks_received_total{task}``: taken from the broker by a worker
  (its main process);
- ``celery_tasks_succeeded_total{task}``, ``celery_tasks_failed_total{task}``,
  ``celery_tasks_retried_total{task}`` (each retry counts; ``dispatch.collect``
  polls for acks by retrying itself, so its retries are normal),
  ``celery_tasks_revoked_total{task,reason}`` (reason ``expired`` for a stale
  setpoint dropped unrun, ``terminated`` or ``revoked``): worker children
  (time-limit failures: the worker's main process);
- ``celery_task_runtime_seconds{task}``: histogram of each run's wall time
  (successful, failed or retried), measured in the child that ran it;
- ``celery_queue_depth{queue}``: messages waiting in each Celery queue, and
  ``celery_broker_up``: 1 when the broker answered that question. Computed by
  the web process at scrape time (Redis ``LLEN``, 0.5 s timeout, no retry) so
  a down broker makes the scrape lose these samples, never fail or hang.

``task`` is the registered task name (a bounded set), never ids or arguments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# Tasks run from milliseconds (a publish batch) to minutes (day-ahead planning).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

TASKS_SENT = Counter("celery_tasks_sent_total", "Celery tasks published to the broker.", ["task"])
TASKS_RECEIVED = Counter("celery_tasks_received_total", "Celery tasks received by a worker.", ["task"])
TASKS_SUCCEEDED = Counter("celery_tasks_succeeded_total", "Celery task runs that succeeded.", ["task"])
TASKS_FAILED = Counter("celery_tasks_failed_total", "Celery task runs that failed for good.", ["task"])
TASKS_RETRIED = Counter("celery_tasks_retried_total", "Celery task runs that asked for a retry.", ["task"])
TASKS_REVOKED = Counter(
    "celery_tasks_revoked_total",
    "Celery tasks revoked before or while running (reason: expired, terminated, revoked).",
    ["task", "reason"],
)
TASK_RUNTIME = Histogram(
    "celery_task_runtime_seconds", "Wall time of Celery task runs.", ["task"], buckets=RUNTIME_BUCKETS
)

UNKNOWN = "unknown"
_started: dict[str, float] = {}  # task id -> perf_counter at prerun, in the child running it


def _name(task: object) -> str:
    return str(getattr(task, "name", None) or UNKNOWN)


def on_sent(task_name: str | None) -> None:
    TASKS_SENT.labels(task=task_name or UNKNOWN).inc()


def on_received(request: object) -> None:
    TASKS_RECEIVED.labels(task=_name(request)).inc()


def on_prerun(task_id: str | None) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def on_postrun(task: object, task_id: str | None) -> None:
    started = _started.pop(task_id, None) if task_id else None
    if started is not None:
        TASK_RUNTIME.labels(task=_name(task)).observe(time.perf_counter() - started)


def on_succeeded(task: object) -> None:
    TASKS_SUCCEEDED.labels(task=_name(task)).inc()


def on_failed(task: object) -> None:
    TASKS_FAILED.labels(task=_name(task)).inc()


def on_retried(task: object) -> None:
    TASKS_RETRIED.labels(task=_name(task)).inc()


def on_revoked(task: object, *, expired: bool, terminated: bool) -> None:
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    TASKS_REVOKED.labels(task=_name(task), reason=reason).inc()


# --- queue depth, at scrape time ------------------------------------------------

QUEUE_DEPTH_TIMEOUT_S = 0.5
# kombu's Redis transport keeps priority messages in sibling lists "<queue>\x06\x16<n>".
REDIS_PRIORITY_SEP = "\x06\x16"
REDIS_PRIORITY_STEPS = (3, 6, 9)


def queue_names() -> list[str]:
    """The Celery queues of this platform: the default one, those declared in
    ``task_queues`` and those named by ``task_routes``."""
    from v2g_project.celery import app

    names = {app.conf.task_default_queue}
    for queue in app.conf.task_queues or ():
        names.add(queue.name)
    routes = app.conf.task_routes
    for route in (routes.values() if isinstance(routes, dict) else ()) or ():
        if isinstance(route, dict) and route.get("queue"):
            names.add(str(getattr(route["queue"], "name", route["queue"])))
    return sorted(names)


def _redis_depths(url: str, queues: Iterable[str], timeout_s: float) -> dict[str, int]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    prefix = (settings.CELERY_BROKER_TRANSPORT_OPTIONS or {}).get("global_keyprefix", "")
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        queues = list(queues)
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(prefix + queue)
            for step in REDIS_PRIORITY_STEPS:
                pipe.llen(f"{prefix}{queue}{REDIS_PRIORITY_SEP}{step}")
        lengths = pipe.execute()
    finally:
        client.close()
    per_queue = len(REDIS_PRIORITY_STEPS) + 1
    return {queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(queues)}


def _filesystem_depths(queues: Iterable[str]) -> dict[str, int]:
    # The embedded demo transport: one file "<ms>_<uuid>.<queue>.msg" per message.
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    names = [entry.name for entry in folder.iterdir()] if folder.is_dir() else []
    return {queue: sum(name.endswith(f".{queue}.msg") for name in names) for queue in queues}


class QueueDepthCollector:
    """``celery_queue_depth{queue}`` and ``celery_broker_up``, asked of the broker at collect time."""

    def __init__(self, timeout_s: float = QUEUE_DEPTH_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def describe(self):
        return list(self._families())

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "celery_queue_depth", "Messages waiting in a Celery queue (read at scrape).", labels=["queue"]
            ),
            GaugeMetricFamily(
                "celery_broker_up", "1 if the Celery broker answered the queue depth query at this scrape."
            ),
        )

    def collect(self):
        depth, up = self._families()
        url = settings.CELERY_BROKER_URL.split(";")[0]
        try:
            if url.startswith(("redis://", "rediss://", "unix://")):
                depths = _redis_depths(url, queue_names(), self.timeout_s)
            elif url.startswith("filesystem://"):
                depths = _filesystem_depths(queue_names())
            else:
                depths = None  # another transport: no depth to offer
        except Exception as exc:  # noqa: BLE001 - any broker trouble: no depth, never a failed scrape
            log.warning("Celery queue depth not exposed: %s", type(exc).__name__)
            up.add_metric([], 0)
        else:
            if depths is not None:
                up.add_metric([], 1)
                for queue, length in depths.items():
                    depth.add_metric([queue], length)
        yield from (depth, up)
