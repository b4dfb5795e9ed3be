"""Thin Celery tasks of the scheduler: the daily D+1 planning and the execution
of the approved plan at each slot start (both registered in django-celery-beat
by migration 0002, editable in the admin)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError

from scheduler import services

log = logging.getLogger(__name__)

# Both services are idempotent (a plan by its inputs, a slot by its signal's
# external id): a retry or a redelivery creates nothing twice.
DB_RETRY = {
    "autoretry_for": (DatabaseError,),
    "retry_backoff": 1.0,
    "retry_backoff_max": 60,  # well below the Redis visibility timeout
    "retry_jitter": True,
}


@shared_task(name="scheduler.plan_next_day", acks_late=True, max_retries=3, **DB_RETRY)
def plan_next_day_task(fleet_id: str | None = None) -> dict:
    """Plan tomorrow (local day). A failure is logged with its reason and raised
    again, so that the task fails visibly (and Sentry, when configured, gets it)."""
    try:
        outcome = services.plan_next_day(fleet_id=fleet_id)
    except Exception as exc:
        log.error("day-ahead planning failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise
    plan = outcome.plan
    return {
        "plan_id": str(plan.id),
        "day": plan.day.isoformat(),
        "version": plan.version,
        "created": outcome.created,
        "shortfall_kwh": plan.shortfall_kwh,
    }


@shared_task(name="scheduler.execute_slot", acks_late=True, max_retries=3, **DB_RETRY)
def plan_execute_task() -> dict:
    """The approved plan's slot under way becomes a NEBEF signal (once)."""
    try:
        return services.plan_execute()
    except Exception as exc:
        log.error("plan execution failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise
