"""The console's data migration: its groups, and staff users of before keep every fleet."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from fleet.models import OperatorAccess

LATEST = ("console", "0001_operator_and_auditor_groups")


@pytest.mark.django_db(transaction=True)
def test_staff_users_that_existed_before_fleet_access_keep_every_fleet():
    MigrationExecutor(connection).migrate([("console", None)])
    assert not Group.objects.filter(name__in=("Operators", "Auditors")).exists()
    users = get_user_model().objects
    staff = users.create_user("ops-of-before", is_staff=True)
    users.create_user("driver")  # not staff: no access given
    users.create_superuser("root", password="pw-root-1")  # every fleet anyway

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([LATEST])

    assert list(OperatorAccess.objects.values_list("user__username", "all_fleets")) == [
        (staff.username, True)
    ]
    assert set(Group.objects.values_list("name", flat=True)) >= {"Operators", "Auditors"}
