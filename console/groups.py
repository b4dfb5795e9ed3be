"""The console's two groups (see the data migration 0001 and README "Operator console").

- "Auditors": the view permission of every model of the console (fleets,
  vehicles, telemetry, signals, dispatches, the dispatch log, plans, KPIs,
  API tokens, periodic tasks, the admin log) and nothing else.
- "Operators": the same, plus what running the fleet needs.

Which fleets a member sees is set per user (fleet access, on the user's page);
the groups say what members may do.
"""

from __future__ import annotations

VIEW_APPS = ("fleet", "telemetry", "dispatch", "scheduler", "kpis", "django_celery_beat", "admin")
OPERATOR_EXTRA = (
    ("fleet", "change_vehicle"),  # edit, activate, deactivate
    ("fleet", "add_site"),
    ("fleet", "change_site"),
    ("fleet", "add_apitoken"),  # issue tokens of their fleets
    ("fleet", "change_apitoken"),  # revoke them
    ("dispatch", "add_flexibilitysignal"),  # submit signals
    ("dispatch", "add_dispatch"),  # re-run fallback
    ("scheduler", "change_plan"),  # approve, reject
    ("kpis", "change_vehicledaykpi"),  # backfill
)
AUDITORS = "Auditors"
OPERATORS = "Operators"


def ensure_groups(group_model, permission_model, *, only_missing: bool) -> list[str]:
    """Create the groups with their permissions (model classes given, so that a
    migration passes its historical ones); with ``only_missing``, a group that
    exists is left as an administrator may have edited it. Returns the names
    of the groups (re)set."""
    view = list(
        permission_model.objects.filter(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")
    )
    extra = list(
        permission_model.objects.filter(
            content_type__app_label__in={app for app, _ in OPERATOR_EXTRA},
            codename__in={codename for _, codename in OPERATOR_EXTRA},
        )
    )
    done = []
    for name, permissions in ((AUDITORS, view), (OPERATORS, [*view, *extra])):
        group, created = group_model.objects.get_or_create(name=name)
        if created or not only_missing:
            group.permissions.set(permissions)
            done.append(name)
    return done


def ensure_groups_after_migrate(sender, **kwargs) -> None:
    """post_migrate: recreate a group that is missing (e.g. after a test
    database flush); the data migration made them first."""
    from django.contrib.auth.models import Group, Permission

    if sender.name == "console":
        ensure_groups(Group, Permission, only_missing=True)
