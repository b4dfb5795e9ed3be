"""Thin Celery task of the KPIs: recompute the recent days (registered in
django-celery-beat by migration 0002, editable in the admin)."""

from __future__ import annotations

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
