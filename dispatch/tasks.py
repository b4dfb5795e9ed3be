"""Thin Celery tasks of dispatch: ids in, one service call, a retry policy."""

from __future__ import annotations

import random

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from dispatch import services
from v2g_project.logcontext import log_context

# A database blip (connection dropped, lock timeout) is retried with backoff;
# every service below is idempotent, so a retry or a redelivery is harmless.
DB_RETRY = {
    "autoretry_for": (DatabaseError,),
    "retry_backoff": 0.5,
    "retry_backoff_max": 30,  # well below the Redis visibility timeout
    "retry_jitter": True,
}


@shared_task(name="dispatch.allocate", acks_late=True, reject_on_worker_lost=True, max_retries=8, **DB_RETRY)
def dispatch_allocate_task(dispatch_id: str) -> str:
    with log_context(dispatch_id=dispatch_id):
        return services.dispatch_allocate(dispatch_id)


@shared_task(
    name="dispatch.publish", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8, **DB_RETRY
)
def commands_publish_task(
    self,
    command_ids: list[str] | None = None,
    attempt: int = 0,
    dispatch_id: str | None = None,
    batch: int | None = None,
) -> dict:
    """Publish one batch of a dispatch (or explicit commands); failed vehicles are
    retried on their own (a new task with just them) with exponential backoff
    and jitter, up to mqtt.max_retries, on the queue this batch came from."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    with log_context(dispatch_id=dispatch_id):
        outcome = services.commands_publish(
            command_ids, attempt, dispatch_id=dispatch_id, batch=batch, redelivered=redelivered
        )
    if outcome.retrying:
        delay = services.publish_retry_delay_s(attempt, settings.V2G.mqtt.backoff_ms)
        queue = (self.request.delivery_info or {}).get("routing_key")
        commands_publish_task.apply_async(args=[outcome.retrying, attempt + 1], countdown=delay, queue=queue)
    return {
        "published": outcome.published,
        "retrying": len(outcome.retrying),
        "failed": outcome.failed,
        "expired": outcome.expired,
    }


# Polls by retrying itself (bounded by the ack deadline, after which it finalises).
@shared_task(
    name="dispatch.collect",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
    **DB_RETRY,
)
def dispatch_collect_task(self, dispatch_id: str) -> str:
    """Wait for the round's acks (by retrying itself), then finalise it."""
    with log_context(dispatch_id=dispatch_id):
        try:
            wait_s = services.dispatch_collect(dispatch_id)
        except DatabaseError as exc:
            # Not DB_RETRY's backoff: request.retries counts every poll too, so
            # after a few seconds of polling it meant a random wait of up to
            # retry_backoff_max (30 s) after a one-second database blip.
            raise self.retry(exc=exc, countdown=random.uniform(0.5, 2.0)) from None
    if wait_s is not None:
        raise self.retry(countdown=wait_s)
    return "finalised"


@shared_task(name="dispatch.sweep", acks_late=True, expires=60, max_retries=3, **DB_RETRY)
def dispatch_sweep_task() -> dict:
    return services.dispatch_sweep()


# --- synthetic signals, Beat-driven (rteGenerator.runner: beat) ----------------------


@shared_task(name="dispatch.generator_tick", max_retries=3, **DB_RETRY)
def generator_tick_task() -> dict:
    from dispatch.generator_runner import generator_tick

    return generator_tick()


@shared_task(
    name="dispatch.generator_emit", acks_late=True, reject_on_worker_lost=True, max_retries=5, **DB_RETRY
)
def generator_emit_task(**kwargs) -> str:
    from dispatch.generator_runner import generator_emit

    return generator_emit(**kwargs)
