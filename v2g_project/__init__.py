"""v2g: a V2G aggregator back end (Django + Celery + MQTT)."""

from v2g_project.celery import app as celery_app

__all__ = ("celery_app",)
__version__ = "0.1.0"
