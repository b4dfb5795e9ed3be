"""The Beat scheduler: django-celery-beat's DatabaseScheduler (the schedule
lives in the database, editable in the admin), plus a liveness file.

Beat has no port and answers no ping; a Beat stuck on its database or dead
inside a live container would go unnoticed. Each tick (at most 5 s apart,
django-celery-beat's maximum loop interval) touches
``celery.beat_heartbeat_file``, which ``python -m v2g_project.heartbeat``
checks (docker-compose's beat health check).
"""

from __future__ import annotations

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from v2g_project import heartbeat


class Scheduler(DatabaseScheduler):
    def tick(self, *args, **kwargs) -> float:
        delay = super().tick(*args, **kwargs)
        # After a successful tick only: one that raised (database down) leaves the file to age.
        if settings.V2G.celery.beat_heartbeat_file:
            heartbeat.touch(heartbeat.resolve(settings.V2G.celery.beat_heartbeat_file))
        return delay
