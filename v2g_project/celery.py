"""The Celery application.

Broker, serializers and time limits come from Django settings (CELERY_
namespace), themselves from the typed configuration. The configuration file is
chosen with $V2G_CONFIG for Celery processes (Celery's own -c is concurrency).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "v2g_project.settings")

app = Celery("v2g_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["v2g_project", "fleet", "telemetry", "dispatch", "scheduler", "kpis"])


@worker_process_init.connect
def _fresh_mqtt_after_fork(**_: object) -> None:
    # A paho client inherited through fork publishes nothing: drop it, and let
    # the first publish in this child create its own (with its own client id).
    from v2g_project import mqtt

    mqtt.reset_after_fork()


@worker_process_shutdown.connect
def _close_mqtt(pid: int | None = None, **_: object) -> None:
    from v2g_project import mqtt
    from v2g_project.metrics import process_exited

    mqtt.publisher_close()
    process_exited(pid or os.getpid())
