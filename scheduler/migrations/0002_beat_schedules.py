"""Register the day-ahead jobs in django-celery-beat (visible and editable in
the admin, Periodic tasks).

- Planning of D+1, daily at ``scheduler.run_at`` local time (crontab in
  ``scheduler.time_zone``). The time is taken from the configuration when this
  migration runs; change it later in the admin.
- Execution of the approved plan, every quarter-hour on the clock. The crontab
  is in UTC on purpose: local quarter-hours are UTC quarter-hours in every real
  zone, and UTC has no daylight-saving change, so no run is skipped or doubled
  on the days the clocks change. It serves 30- and 60-minute slots too (the
  runs inside a slot find its signal already submitted and do nothing).
"""

from django.conf import settings
from django.db import migrations

PLAN = "scheduler: plan D+1"
EXECUTE = "scheduler: execute the approved plan"


def add_schedules(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    cfg = settings.V2G.scheduler
    hour, minute = (int(part) for part in cfg.run_at.split(":"))
    daily, _ = CrontabSchedule.objects.get_or_create(
        minute=str(minute),
        hour=str(hour),
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone=cfg.time_zone,
    )
    PeriodicTask.objects.update_or_create(
        name=PLAN,
        defaults={
            "task": "scheduler.plan_next_day",
            "crontab": daily,
            "interval": None,
            "enabled": True,
            "expire_seconds": 6 * 3600,
            "description": "Plans tomorrow's NEBEF delivery (local day of scheduler.time_zone) as a new "
            "draft version for an operator to approve; does nothing when the inputs are those of an "
            "existing version. Failures are logged and reported to Sentry.",
        },
    )
    quarters, _ = CrontabSchedule.objects.get_or_create(
        minute="*/15",
        hour="*",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.update_or_create(
        name=EXECUTE,
        defaults={
            "task": "scheduler.execute_slot",
            "crontab": quarters,
            "interval": None,
            "enabled": True,
            # A run that waited this long is for a slot nearly over: the next one takes over.
            "expire_seconds": 600,
            "description": "At each slot start, the approved plan's entries for the slot become one "
            "NEBEF signal dispatched with exactly the planned setpoints (once per plan and slot).",
        },
    )


def remove_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[PLAN, EXECUTE]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedules, remove_schedules)]
