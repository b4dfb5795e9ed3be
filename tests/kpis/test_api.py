"""GET /api/vehicles/{id}/kpis."""

from __future__ import annotations

import datetime as dt

import pytest

from fleet import services as fleet_services
from kpis import services
from tests.kpis.fixtures import command, vehicle

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(settings):
    vehicle("car.1")
    vehicle("ev-2", fleet_id="f2")
    command("car.1", 10, "2025-06-03T10:00:00+02:00", 1800)  # 5 kWh on the 3rd
    command("car.1", -4, "2025-06-04T10:00:00+02:00", 3600)  # 4 kWh consumed on the 4th
    command("car.1", 2, "2025-06-04T12:00:00+02:00", 3600)  # 2 kWh on the 4th
    command("ev-2", 6, "2025-06-03T10:00:00+02:00", 600)
    services.kpis_compute_range(dt.date(2025, 6, 1), dt.date(2025, 6, 5))


def test_rows_and_totals(api, stored, settings):
    factor = settings.V2G.metrics.emission_factor
    response = api.get("/api/vehicles/car.1/kpis?start=2025-06-01&end=2025-06-04")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["vehicle_id"], body["start"], body["end"]) == ("car.1", "2025-06-01", "2025-06-04")
    days = [(d["day"], d["injected_kwh"], d["consumed_kwh"], d["energy_ratio"]) for d in body["days"]]
    assert days == [("2025-06-03", 5.0, 0.0, None), ("2025-06-04", 2.0, 4.0, 0.5)]
    assert body["days"][0]["co2_avoided_g"] == pytest.approx(5 * factor)
    assert body["days"][0]["measured_share"] == 0.0  # no telemetry: all from the commands
    assert body["totals"] == {
        "days": 2,
        "injected_kwh": 7.0,
        "consumed_kwh": 4.0,
        "co2_avoided_g": pytest.approx(7 * factor),
        "energy_ratio": 1.75,
    }
    # The trailing-slash alias; one day; no consumption: a null ratio in the totals too.
    body = api.get("/api/vehicles/car.1/kpis/?start=2025-06-03&end=2025-06-03").json()
    assert body["totals"]["energy_ratio"] is None and body["totals"]["injected_kwh"] == 5.0


def test_defaults_to_the_last_week(api, stored):
    body = api.get("/api/vehicles/car.1/kpis").json()
    today = services.local_today()
    assert (body["start"], body["end"]) == ((today - dt.timedelta(days=6)).isoformat(), today.isoformat())


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("start=2025-06-31", "start"),
        ("start=yesterday", "start"),
        ("end=2025-6-3", "end"),
        ("start=2025-06-05&end=2025-06-04", "start"),
        ("start=2024-01-01&end=2025-06-04", "end"),
    ],
)
def test_bad_dates_are_a_400_naming_the_parameter(api, stored, query, param):
    response = api.get(f"/api/vehicles/car.1/kpis?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [param]


def test_unknown_vehicle_is_a_404(api, stored):
    assert api.get("/api/vehicles/nope/kpis").status_code == 404


def test_fleet_scoped(client, stored):
    f1 = fleet_services.api_token_create(name="f1", fleet_ids=["f1"])[1]
    auth = {"Authorization": f"Bearer {f1}"}
    assert (
        client.get("/api/vehicles/car.1/kpis?start=2025-06-03&end=2025-06-03", headers=auth).status_code
        == 200
    )
    response = client.get("/api/vehicles/ev-2/kpis?start=2025-06-03&end=2025-06-03", headers=auth)
    assert response.status_code == 404
    assert client.get("/api/vehicles/car.1/kpis").status_code in (401, 403)


def test_the_status_route_and_vehicle_detail_still_work(api, stored):
    assert api.get("/api/vehicles/status").status_code == 200
    assert api.get("/api/vehicles/car.1/").json()["id"] == "car.1"
