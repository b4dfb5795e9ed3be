"""The operator's plan screens: list, detail with the per-slot table, approval
and rejection actions, exports, paginated entries."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone

from scheduler import exports
from scheduler.models import Plan, PlanStatus
from tests.scheduler.plans import stored_plan

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/scheduler/plan/"


def drafts(day: date) -> list[Plan]:
    return [stored_plan(day, {(12, "ev-1"): float(v), (13, "ev-2"): -1.0}) for v in (1, 2, 3)]


@pytest.fixture
def versions():
    """Three draft versions of the autumn day of 2025 (100 quarter-hours)."""
    return drafts(date(2025, 10, 26))


@pytest.fixture
def upcoming():
    """Three draft versions of a day to come (a past day cannot be approved)."""
    return drafts(timezone.now().date() + timedelta(days=10))


def action(admin_client, name: str, *plans: Plan):
    return admin_client.post(
        CHANGELIST, {"action": name, "_selected_action": [str(p.pk) for p in plans]}, follow=True
    )


def test_the_plan_list_shows_versions_status_and_totals(admin_client, versions):
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count("Oct. 26, 2025") >= 3 and "all fleets" in text and "draft" in text
    for label in ("Approve the selected draft (supersedes the day", "Reject the selected drafts"):
        assert label in text


def test_the_plan_page_summarises_slots_and_links_entries_and_exports(admin_client, versions):
    plan = versions[0]
    page = admin_client.get(f"{CHANGELIST}{plan.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count("<tr><td>") == 100  # one row per slot, not per entry
    assert "2025-10-26T02:00:00+02:00" in text and "2025-10-26T02:00:00+01:00" in text
    assert f"?plan__id__exact={plan.pk}" in text and "browse the 2 entries" in text
    assert f"/admin/scheduler/plan/{plan.pk}/export.csv" in text
    entries = admin_client.get(f"/admin/scheduler/planentry/?plan__id__exact={plan.pk}")
    assert entries.status_code == 200 and "ev-2" in entries.content.decode()
    download = admin_client.get(f"/admin/scheduler/plan/{plan.pk}/export.json")
    assert b"".join(download.streaming_content) == exports.plan_json(plan)
    assert admin_client.get(f"/admin/scheduler/plan/{plan.pk}/export.xml").status_code == 404


def test_approve_and_reject_actions_record_who_and_supersede(admin_client, admin_user, upcoming):
    v1, v2, v3 = upcoming
    day = v1.day.isoformat()
    page = action(admin_client, "approve", v1)
    assert f"{day} version 1 approved." in page.content.decode()
    page = action(admin_client, "approve", v2)
    assert f"{day} version 2 approved; version 1 is superseded." in page.content.decode()
    statuses = dict(Plan.objects.values_list("version", "status"))
    assert statuses == {1: PlanStatus.SUPERSEDED, 2: PlanStatus.APPROVED, 3: PlanStatus.DRAFT}
    assert Plan.objects.get(version=2).decided_by == admin_user

    page = action(admin_client, "reject", v2, v3)
    text = page.content.decode()
    assert "is approved: only a draft can be rejected" in text and f"{day} version 3 rejected." in text
    assert LogEntry.objects.filter(object_id=str(v3.pk), change_message="Rejected").exists()
    history = admin_client.get(f"{CHANGELIST}{v1.pk}/history/").content.decode()
    assert "Superseded by version 2" in history


def test_a_past_day_and_two_versions_of_a_day_at_once_are_refused(admin_client, versions, upcoming):
    assert "the delivery day is over" in action(admin_client, "approve", versions[0]).content.decode()
    page = action(admin_client, "approve", upcoming[0], upcoming[1])
    assert f"select one version of {upcoming[0].day} to approve, not several" in page.content.decode()
    assert not Plan.objects.filter(status=PlanStatus.APPROVED).exists()


def test_export_actions_download_one_plan(admin_client, versions):
    response = admin_client.post(
        CHANGELIST, {"action": "export_csv", "_selected_action": [str(versions[2].pk)]}
    )
    assert response["Content-Disposition"] == 'attachment; filename="plan-2025-10-26-v3.csv"'
    assert b"".join(response.streaming_content) == exports.plan_csv(versions[2])
    page = action(admin_client, "export_json", *versions)
    assert "Select exactly one plan to export." in page.content.decode()
