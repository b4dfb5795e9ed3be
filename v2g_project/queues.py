"""Task routing: which Celery queue, and at which priority, each task goes to.

Four classes of work, each on its own queue (names from config
``celery.queues``), so that a long planning run or KPI backfill never sits in
front of a setpoint:

========== =========================================================== ========
queue      tasks                                                       priority
========== =========================================================== ========
dispatch   dispatch.* (allocate, publish, collect/fallback, sweep,      0
           generator), scheduler.execute_slot (a plan slot's signal)
telemetry  telemetry.* (pull rounds, discovery, purge, profiles)        3
planning   scheduler.* (day-ahead plans)                                6
kpis       kpis.* (recompute, backfill)                                 6
default    anything else (v2g.health_ping)                              0
========== =========================================================== ========

Priorities are kombu's Redis priorities (0 is the highest; kombu's default
steps 0, 3, 6, 9). A worker BRPOPs the priority-0 lists of all its queues
before any lower one, so a single worker that consumes every queue (started
without ``-Q``: ``make demo``, the tests, a one-machine deployment) still takes
dispatch work first. Dedicated workers (``-Q dispatch`` and
``-Q telemetry,planning,kpis``) separate them completely.

Pure module: it takes the config section and returns Celery settings.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from v2g_project.config import CeleryConfig

# Task-name patterns to their class; exact names before globs (Celery's
# MapRoute tries exact names first, then patterns in this order).
TASK_CLASSES: dict[str, str] = {
    "scheduler.execute_slot": "dispatch",
    "dispatch.*": "dispatch",
    "telemetry.*": "telemetry",
    "scheduler.*": "planning",
    "kpis.*": "kpis",
}
PRIORITIES: dict[str, int] = {"dispatch": 0, "telemetry": 3, "planning": 6, "kpis": 6}
# Dispatch first: with equal priorities, kombu reads the queues in this order.
CLASS_ORDER: tuple[str, ...] = ("dispatch", "telemetry", "planning", "kpis")


def queue_names(cfg: CeleryConfig) -> list[str]:
    """Every queue of the platform, dispatch first, without duplicates."""
    names = [getattr(cfg.queues, cls) for cls in CLASS_ORDER]
    names.insert(1, cfg.default_queue)
    return list(dict.fromkeys(names))


def task_queues(cfg: CeleryConfig) -> list[Queue]:
    """``task_queues``: what a worker started without ``-Q`` consumes (all of them)."""
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in queue_names(cfg)]


def task_routes(cfg: CeleryConfig) -> dict[str, dict]:
    """``task_routes``: the queue and priority of each task; explicit
    ``apply_async(queue=..., priority=...)`` options still win."""
    return {
        pattern: {"queue": getattr(cfg.queues, cls), "priority": PRIORITIES[cls]}
        for pattern, cls in TASK_CLASSES.items()
    }
