"""Thin Celery task of the KPIs: recompute the recent days (registered in
django-celery-beat by migration 0002, editable in the admin)."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.db import DatabaseError

from kpis import services


# Idempotent (a day's rows are replaced): a retry or a redelivery is harmless.
@shared_task(
    name="kpis.recompute_recent",
    acks_late=True,
    max_retries=3,
    autoretry_for=(DatabaseError,),
    retry_backoff=1.0,
    retry_backoff_max=60,
    retry_jitter=True,
)
def kpis_compute_recent_task(days_back: int = 1) -> dict:
    """Recompute today and the ``days_back`` local days before it."""
    return services.kpis_compute_recent(days_back=days_back)


# Idempotent too; enqueued by the admin's "Backfill KPIs" page (and usable from any client).
@shared_task(
    name="kpis.backfill",
    acks_late=True,
    max_retries=3,
    autoretry_for=(DatabaseError,),
    retry_backoff=1.0,
    retry_backoff_max=60,
    retry_jitter=True,
)
def kpis_backfill_task(start: str, end: str, fleet_id: str | None = None) -> dict:
    """Recompute the KPIs of every local day from ``start`` to ``end`` (ISO dates,
    inclusive), of one fleet or of all; each day is committed on its own."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    rows = services.kpis_compute_range(first, last, fleet_id=fleet_id)
    return {"start": start, "end": end, "fleet_id": fleet_id, "rows": rows}
