from __future__ import annotations

import pytest

from fleet.models import Fleet, Site, Vehicle

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    fleet = Fleet.objects.create(id="paris-vans", name="Paris vans")
    Site.objects.create(fleet=fleet, name="Depot")
    return fleet


VEHICLE = {
    "id": "ev-42",
    "fleet": "paris-vans",
    "site": "Depot",
    "cluster": "north",
    "segment": "vans",
    "is_v2g": True,
    "battery_kwh": 52,
    "max_charge_kw": 11,
    "max_discharge_kw": 7.4,
    "min_soc": 0.3,
    "target_soc": 0.8,
}


def test_create_list_filter_update_and_delete_a_vehicle(api, fleet):
    created = api.post("/api/vehicles/", VEHICLE, content_type="application/json")
    assert created.status_code == 201, created.json()
    assert created.json()["site"] == "Depot"
    listing = api.get("/api/vehicles/?fleet_id=paris-vans&cluster=north").json()
    assert [v["id"] for v in listing["results"]] == ["ev-42"]
    assert api.get("/api/vehicles/?cluster=south").json()["count"] == 0
    patched = api.patch(
        "/api/vehicles/ev-42/", {"active": False, "id": "other"}, content_type="application/json"
    )
    assert patched.status_code == 200
    assert Vehicle.objects.get(id="ev-42").active is False  # and the id did not change
    assert api.delete("/api/vehicles/ev-42/").status_code == 204


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"min_soc": 30}, "min_soc"),
        ({"battery_kwh": "big"}, "battery_kwh"),
        ({"fleet": "nope"}, "fleet"),
        ({"site": "Nowhere"}, "site"),
        ({"id": "ev 42/#"}, "id"),
    ],
)
def test_bad_vehicle_is_refused_naming_the_field(api, fleet, change, field):
    response = api.post("/api/vehicles/", {**VEHICLE, **change}, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Vehicle.objects.exists()


def test_fleets_endpoint(api):
    assert (
        api.post("/api/fleets/", {"id": "lyon", "name": "Lyon"}, content_type="application/json").status_code
        == 201
    )
    assert [f["id"] for f in api.get("/api/fleets/").json()["results"]] == ["lyon"]


def test_a_fleet_keeps_its_id_when_patched(api, fleet):
    # The id is the primary key: it used to be saved as a copy of the fleet under the new id.
    response = api.patch(
        "/api/fleets/paris-vans/", {"id": "lyon", "name": "Paris"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["id"] == "paris-vans"
    assert list(Fleet.objects.values_list("id", "name")) == [("paris-vans", "Paris")]


def test_a_vehicle_id_with_a_dot_is_reachable(api, fleet):
    # Ids may hold dots; the router's default pattern stopped at the dot (an HTML 404).
    created = api.post("/api/vehicles/", {**VEHICLE, "id": "car.1"}, content_type="application/json")
    assert created.status_code == 201, created.json()
    assert api.get("/api/vehicles/car.1/").json()["id"] == "car.1"
    assert (
        api.patch("/api/vehicles/car.1/", {"cluster": "south"}, content_type="application/json").status_code
        == 200
    )
    assert api.delete("/api/vehicles/car.1/").status_code == 204
    assert not Vehicle.objects.exists()


def test_a_site_name_used_by_two_fleets_resolves_in_the_vehicle_fleet(api, fleet):
    lyon = Fleet.objects.create(id="lyon", name="Lyon")
    lyon_depot = Site.objects.create(fleet=lyon, name="Depot")  # as in paris-vans

    created = api.post("/api/vehicles/", {**VEHICLE, "fleet": "lyon"}, content_type="application/json")

    assert created.status_code == 201, created.json()
    assert Vehicle.objects.get(id="ev-42").site == lyon_depot
    moved = api.patch("/api/vehicles/ev-42/", {"site": None}, content_type="application/json")
    assert moved.status_code == 200 and moved.json()["site"] is None
