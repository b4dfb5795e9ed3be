"""Register the dispatch sweep in django-celery-beat (visible and editable in the admin)."""

from django.db import migrations

SWEEP = "dispatch: sweep unfinished dispatches"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=30, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=SWEEP,
        defaults={
            "task": "dispatch.sweep",
            "interval": every,
            "enabled": True,
            "expire_seconds": 60,
            "description": "Finishes commands and dispatch rounds left unfinished by a crashed worker.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("dispatch", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
