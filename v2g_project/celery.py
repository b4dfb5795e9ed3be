"""The Celery application.

Broker, serializers and time limits come from Django settings (CELERY_
namespace), themselves from the typed configuration. The configuration file is
chosen with $V2G_CONFIG for Celery processes (Celery's own -c is concurrency).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import (
    after_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_retry,
    task_revoked,
    task_success,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "v2g_project.settings")

app = Celery("v2g_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["v2g_project", "fleet", "telemetry", "dispatch", "scheduler", "kpis"])


@worker_init.connect
def _check_tls_files(**_: object) -> None:
    # In the worker's main process, before any pool process starts: a TLS file
    # that cannot be loaded stops the worker naming its key, instead of failing
    # every publish later.
    from django.conf import settings

    from v2g_project import mqtt

    mqtt.tls_check_or_exit(settings.V2G.mqtt)


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
    # Sent in the exiting child itself: its live gauges go with it (a child that
    # is killed outright is caught at the next scrape, see multiproc.py).
    process_exited(pid or os.getpid())


# --- Celery task metrics (v2g_project/celery_metrics.py, docs/metrics.md) -------------
# Imported inside the handlers: the metrics must be created after Django
# settings have put prometheus-client in multiprocess mode, and each handler
# runs where its event happens (sent: any publisher, Beat included; received:
# the worker's main process; the rest: the child that runs the task).


@after_task_publish.connect
def _metrics_sent(sender: str | None = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_sent(sender)


@task_received.connect
def _metrics_received(request: object = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_received(request)


@task_prerun.connect
def _metrics_prerun(task_id: str | None = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_prerun(task_id)


@task_postrun.connect
def _metrics_postrun(sender: object = None, task_id: str | None = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_postrun(sender, task_id)


@task_success.connect
def _metrics_succeeded(sender: object = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_succeeded(sender)


@task_failure.connect
def _metrics_failed(sender: object = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_failed(sender)


@task_retry.connect
def _metrics_retried(sender: object = None, **_: object) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_retried(sender)


@task_revoked.connect
def _metrics_revoked(
    sender: object = None, expired: bool = False, terminated: bool = False, **_: object
) -> None:
    from v2g_project import celery_metrics

    celery_metrics.on_revoked(sender, expired=bool(expired), terminated=bool(terminated))
