"""The console's two groups, and fleet access for the staff users of before.

- "Auditors": the view permission of every model of the console (fleets,
  vehicles, telemetry, signals, dispatches, the dispatch log, plans, KPIs,
  API tokens, periodic tasks, the admin log) and nothing else: they see, they
  cannot change or run anything.
- "Operators": the same, plus what running the fleet needs: change vehicles
  (activate, deactivate), add and change sites, submit signals, re-run
  fallback (add dispatch), approve and reject plans, backfill KPIs, issue and
  revoke API tokens.

Which fleets a member sees is set per user (fleet access on the user's page);
the groups only say what they may do. Staff users that existed before fleet
access was introduced kept seeing every fleet: they get all-fleet access.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from console.groups import ensure_groups


def create_groups(apps, schema_editor):
    # Permissions are created after migrations; this migration needs them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    ensure_groups(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), only_missing=False)

    User = apps.get_model("auth", "User")
    OperatorAccess = apps.get_model("fleet", "OperatorAccess")
    for user in User.objects.filter(is_staff=True, is_superuser=False, fleet_access__isnull=True):
        OperatorAccess.objects.create(user=user, all_fleets=True)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=("Auditors", "Operators")).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("fleet", "0003_operatoraccess"),
        ("telemetry", "0004_plug_profiles"),
        ("dispatch", "0007_flexibilitysignal_vehicle_ids"),
        ("scheduler", "0002_beat_schedules"),
        ("kpis", "0003_measured_share"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
