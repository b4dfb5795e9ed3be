"""v2g: a V2G aggregator back end (Django + Celery + MQTT).

The Celery app lives in v2g_project.celery (found by ``celery -A v2g_project``)
and is loaded by the app config's ready() in Django processes, not here: the
typed config and the MQTT factory stay importable without Django (the
simulator uses them).
"""

__version__ = "0.1.0"
