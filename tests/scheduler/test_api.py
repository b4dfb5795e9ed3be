"""GET /api/plans/{date}/ (JSON), /api/plans/{date}.csv and /api/plans/{date}/delivery."""

from __future__ import annotations

import json

import pytest

from fleet import services as fleet_services
from fleet.models import Fleet
from scheduler import exports, services
from scheduler.models import Plan
from tests.scheduler.plans import DAY, NOW, stored_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(django_user_model):
    """Version 1 (superseded) and 2 (approved) of DAY, version 3 a draft."""
    operator = django_user_model.objects.create_user("planner", is_staff=True)
    v1 = stored_plan(DAY, {(40, "ev-1"): 5.0})
    v2 = stored_plan(DAY, {(40, "ev-1"): 6.0, (41, "ev-2"): -2.0})
    v3 = stored_plan(DAY, {(40, "ev-1"): 7.0})
    services.plan_approve(v1.id, user=operator, now=NOW)
    services.plan_approve(v2.id, user=operator, now=NOW)
    return {1: v1, 2: v2, 3: v3}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_the_days_approved_plan_as_json(api, plans):
    response = api.get("/api/plans/2025-06-03/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = b"".join(response.streaming_content)
    assert body == exports.plan_json(Plan.objects.get(id=plans[2].id))
    parsed = json.loads(body)
    assert (parsed["version"], parsed["status"], parsed["decided_by"]) == (2, "approved", "planner")
    assert parsed["entries"] == [
        {"vehicle_id": "ev-1", "slot": 40, "timeslot": "2025-06-03T10:00:00+02:00", "power_kw": 6.0},
        {"vehicle_id": "ev-2", "slot": 41, "timeslot": "2025-06-03T10:15:00+02:00", "power_kw": -2.0},
    ]
    assert parsed["slots"][40]["planned_mw"] == 0.006
    # Without the trailing slash too.
    assert b"".join(api.get("/api/plans/2025-06-03").streaming_content) == body


def test_another_version_by_number(api, plans):
    body = b"".join(api.get("/api/plans/2025-06-03/?version=3").streaming_content)
    assert b'"version":3,"status":"draft"' in body
    response = api.get("/api/plans/2025-06-03/?version=9")
    assert response.status_code == 404
    assert response.json() == {"detail": "no version 9 of the plan for 2025-06-03"}
    for bad in ("0", "x", "-1", "1.5", ""):
        response = api.get(f"/api/plans/2025-06-03/?version={bad}")
        assert response.status_code == 400, bad
        assert list(response.json()) == ["version"]


def test_the_days_approved_plan_as_csv(api, plans):
    for path in ("/api/plans/2025-06-03.csv", "/api/plans/2025-06-03.csv/"):
        response = api.get(path, headers={"Accept": "text/csv"})
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert b"".join(response.streaming_content) == (
            b"vehicle_id,timeslot,power_kw\n"
            b"ev-1,2025-06-03T10:00:00+02:00,6.000\n"
            b"ev-2,2025-06-03T10:15:00+02:00,-2.000\n"
        )
    assert 'filename="plan-2025-06-03-v2.csv"' in response["Content-Disposition"]
    older = api.get("/api/plans/2025-06-03.csv?version=1")
    assert b"".join(older.streaming_content).endswith(b"ev-1,2025-06-03T10:00:00+02:00,5.000\n")


def test_a_bad_date_is_a_400_naming_it_and_a_day_without_plan_a_404(api, plans):
    for path in ("/api/plans/2025-13-01/", "/api/plans/tomorrow.csv", "/api/plans/2025-6-3/delivery"):
        response = api.get(path, headers={"Accept": "text/csv"})
        assert response.status_code == 400, path
        assert response["Content-Type"] == "application/json"
        assert list(response.json()) == ["date"]
    for path in ("/api/plans/2025-06-04/", "/api/plans/2025-06-04.csv"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "no approved plan for 2025-06-04"}


def test_delivery_against_plan(api, plans):
    for path in ("/api/plans/2025-06-03/delivery", "/api/plans/2025-06-03/delivery/"):
        response = api.get(path)
        assert response.status_code == 200
        body = response.json()
        assert (body["version"], body["executed_slots"], len(body["slots"])) == (2, 0, 96)
        assert body["slots"][40] == {
            "slot": 40, "timeslot": "2025-06-03T10:00:00+02:00", "planned_kw": 6.0, "requested_kw": None,
            "allocated_kw": None, "acknowledged_kw": None, "status": "not_executed", "signal_id": None,
            "dispatch_id": None,
        }  # fmt: skip


def test_plans_need_credentials_and_are_scoped_by_fleet(client, plans):
    for path in ("/api/plans/2025-06-03/", "/api/plans/2025-06-03.csv", "/api/plans/2025-06-03/delivery"):
        assert client.get(path).status_code == 401
    Fleet.objects.create(id="paris", name="Paris")
    Fleet.objects.create(id="lyon", name="Lyon")
    paris = fleet_services.api_token_create(name="paris", fleet_ids=["paris"], all_fleets=False)[1]
    everyone = fleet_services.api_token_create(name="all", fleet_ids=[], all_fleets=True)[1]
    # The approved plan is for every fleet: a token of one fleet does not see it.
    assert client.get("/api/plans/2025-06-03/", headers=bearer(paris)).status_code == 404
    assert client.get("/api/plans/2025-06-03.csv", headers=bearer(everyone)).status_code == 200
    # A plan of the Paris fleet (another day) is visible to the Paris token, not to Lyon's.
    paris_plan = stored_plan(DAY.replace(day=4), {(40, "ev-1"): 1.0})
    Plan.objects.filter(id=paris_plan.id).update(fleet_id="paris")
    lyon = fleet_services.api_token_create(name="lyon", fleet_ids=["lyon"], all_fleets=False)[1]
    assert client.get("/api/plans/2025-06-04/?version=1", headers=bearer(paris)).status_code == 200
    assert client.get("/api/plans/2025-06-04/?version=1", headers=bearer(lyon)).status_code == 404
