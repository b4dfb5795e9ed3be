"""Register the KPI recomputation in django-celery-beat (visible and editable
in the admin, Periodic tasks): every hour at minute 7 (UTC, so no run is
skipped or doubled when the clocks change), today and yesterday (local days of
scheduler.time_zone) are recomputed. Hourly rather than daily keeps today's
figures and gauges fresh; yesterday is included so that the last hour of a day
is counted once its commands are final. Each run is idempotent."""

from django.db import migrations

NAME = "kpis: recompute today and yesterday"


def add_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    hourly, _ = CrontabSchedule.objects.get_or_create(
        minute="7", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.update_or_create(
        name=NAME,
        defaults={
            "task": "kpis.recompute_recent",
            "crontab": hourly,
            "interval": None,
            "kwargs": '{"days_back": 1}',
            "enabled": True,
            "expire_seconds": 3000,
            "description": "Recomputes per-vehicle daily KPIs (energy, CO2, ratio) of today and the "
            "days_back local days before it from the acknowledged commands; idempotent. For older days "
            "run `manage.py kpis_backfill`.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
