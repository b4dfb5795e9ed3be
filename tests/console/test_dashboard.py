"""GET /api/dashboard/summary and the dashboard page (issue 12)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from console import selectors
from scheduler import services as plan_services
from tests.conftest import operator
from tests.console.test_admin import world_fleet

pytestmark = pytest.mark.django_db

URL = "/api/dashboard/summary"


@pytest.fixture
def world():
    return {"a": world_fleet("fa"), "b": world_fleet("fb", count=3)}


def test_the_summary_of_an_operators_fleets(client, world):
    client.force_login(operator("op-a", fleets=["fa"]))
    body = client.get(URL).json()
    assert body["fleets"] == ["fa"]
    assert body["vehicles"] == {"total": 2, "online": 2, "plugged_in": 2, "dispatched": 1}
    # The FCR signal of fleet A (10 kW, 5.5 acknowledged) since a moment ago, not B's:
    # the last bucket's average, over the share of it the signal covered.
    last = body["power"][-1]
    assert 0 < last["requested_kw"] <= 10.0
    assert last["acknowledged_kw"] == pytest.approx(last["requested_kw"] * 0.55, abs=1e-3)
    assert all(p["requested_kw"] == 0 for p in body["power"][:-2])
    assert body["signal_types"] == [
        {"signal_type": "FCR", "commands": 1, "acked": 1, "open": 0, "ack_rate": 1.0, "latency_avg_ms": 42.0,
         "latency_max_ms": 42.0}
    ]  # fmt: skip
    assert body["window"]["hours"] == 6 and len(body["power"]) == 72
    assert body["co2"]["days"][-1]["day"] == selectors.local_today(timezone.now()).isoformat()
    assert body["plan"] is None


def test_every_fleet_for_a_superuser_and_the_fleet_parameter(admin_client, world):
    body = admin_client.get(URL).json()
    assert body["fleets"] is None and body["vehicles"]["total"] == 5
    assert admin_client.get(URL, {"fleet_id": "fb"}).json()["vehicles"]["total"] == 3


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [({"hours": "0"}, 400, "hours"), ({"hours": "49"}, 400, "hours"), ({"hours": "x"}, 400, "hours"),
     ({"fleet_id": "fb"}, 403, "detail"), ({"fleet_id": "nope"}, 403, "detail")],
)  # fmt: skip
def test_bad_parameters_are_named(client, world, params, status, field):
    client.force_login(operator("op-a", fleets=["fa"]))
    response = client.get(URL, params)
    assert response.status_code == status and field in response.json()


def test_a_token_sees_its_fleets(client, world):
    from fleet.models import ApiToken

    token = ApiToken(name="dash")
    plaintext = token.new_key()
    token.save()
    token.fleets.set(["fb"])
    body = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {plaintext}").json()
    assert body["fleets"] == ["fb"] and body["vehicles"]["total"] == 3
    assert client.get(URL).status_code == 401


def test_todays_approved_plan_against_delivery(admin_client, world):
    plan = world["a"]["plan"]
    plan.day = selectors.local_today(timezone.now())
    plan.save(update_fields=["day"])
    plan_services.plan_approve(plan.pk, now=timezone.now() - timedelta(seconds=1))
    body = admin_client.get(URL).json()
    assert body["plan"]["version"] == plan.version and body["plan"]["fleet_id"] == "fa"
    assert body["plan"]["slots"][12]["planned_kw"] == 3.0
    assert {slot["status"] for slot in body["plan"]["slots"]} == {"not_executed"}


def test_the_dashboard_page_loads_its_scripts_from_the_project(client, world):
    client.force_login(operator("op-a", fleets=["fa"]))
    index = client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in index
    page = client.get("/admin/dashboard/").content.decode()
    assert "/static/console/vendor/chart.umd.min.js" in page and "/static/console/dashboard.js" in page
    assert 'data-url="/api/dashboard/summary"' in page
    for canvas in ("chart-power", "chart-acks", "chart-vehicles", "chart-plan", "chart-co2"):
        assert f'id="{canvas}"' in page
    assert "https://" not in page.split("<body")[0]  # no CDN in the head
