"""Register the pull round and the history purge in django-celery-beat (visible
and editable in the admin).

The pull round is enabled when the configuration at migration time says
pull or hybrid; the task itself reads the mode when it runs and does nothing
in push mode, so switching mode later needs no migration (enable the task in
the admin to save a no-op every interval, or leave it enabled).
"""

from django.conf import settings
from django.db import migrations

POLL = "telemetry: pull round"
PURGE = "telemetry: purge history"


def add_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    cfg = settings.V2G.telemetry
    every, _ = IntervalSchedule.objects.get_or_create(every=cfg.interval_seconds, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=POLL,
        defaults={
            "task": "telemetry.poll",
            "interval": every,
            "enabled": cfg.enabled and cfg.mode in ("pull", "hybrid"),
            # A round that waited longer than its period is superseded by the next.
            "expire_seconds": cfg.interval_seconds,
            "description": "Broadcasts a telemetry request and records who did not answer "
            "(telemetry.mode pull or hybrid; does nothing in push mode).",
        },
    )
    daily, _ = IntervalSchedule.objects.get_or_create(every=1, period="days")
    PeriodicTask.objects.update_or_create(
        name=PURGE,
        defaults={
            "task": "telemetry.purge",
            "interval": daily,
            "enabled": True,
            "expire_seconds": 3600,
            "description": "Deletes state history older than telemetry.retention_days, in chunks.",
        },
    )


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[POLL, PURGE]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0002_history_and_polls"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedules, remove_schedules)]
