"""Thin Celery tasks of telemetry: primitives in, one service call, a retry policy."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from telemetry import services

# Every service below is idempotent, so a retry or a redelivery is harmless.
DB_RETRY = {
    "autoretry_for": (DatabaseError,),
    "retry_backoff": 0.5,
    "retry_backoff_max": 30,  # well below the Redis visibility timeout
    "retry_jitter": True,
}


@shared_task(name="telemetry.poll", acks_late=True, reject_on_worker_lost=True, max_retries=3, **DB_RETRY)
def telemetry_poll_task(force: bool = False, timeout_s: float | None = None) -> dict:
    """One pull round (Beat, every telemetry.interval_seconds). A redelivered or
    duplicated run is refused by the round's constraints, not run twice."""
    started = services.poll_start(force=force, timeout_s=timeout_s)
    if started.outcome == "started":
        telemetry_poll_finish_task.apply_async(args=[str(started.poll_id)], countdown=started.wait_s)
    return {"outcome": started.outcome, "poll_id": str(started.poll_id) if started.poll_id else None}


# Like dispatch.collect: retries itself until the deadline, then finalises.
@shared_task(
    name="telemetry.poll_finish",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    **DB_RETRY,
)
def telemetry_poll_finish_task(self, poll_id: str) -> str:
    wait_s = services.poll_finish(poll_id)
    if wait_s is not None:
        raise self.retry(countdown=wait_s)
    return "finished"


@shared_task(name="telemetry.discover", max_retries=3, **DB_RETRY)
def telemetry_discover_task() -> str:
    return str(services.discovery_broadcast())


@shared_task(name="telemetry.purge", acks_late=True, max_retries=3, **DB_RETRY)
def telemetry_purge_task() -> int:
    return services.history_purge(retention_days=settings.V2G.telemetry.retention_days)


@shared_task(name="telemetry.learn_profiles", acks_late=True, max_retries=3, **DB_RETRY)
def telemetry_learn_profiles_task() -> dict:
    """Relearn every vehicle's plug-in profile (Beat, daily). Recomputed from the
    history each time, so a rerun or a duplicate is harmless."""
    return services.profiles_learn()
