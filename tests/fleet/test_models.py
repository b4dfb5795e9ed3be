from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from fleet.models import Fleet, Site, Vehicle

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    return Fleet.objects.create(id="paris-vans", name="Paris vans")


def make_vehicle(fleet, **fields) -> Vehicle:
    values = {"id": "ev-1", "battery_kwh": 52.0, "max_charge_kw": 11.0, "max_discharge_kw": 11.0}
    values.update(fields)
    return Vehicle.objects.create(fleet=fleet, **values)


def test_vehicle_defaults_and_registry_queries(fleet):
    site = Site.objects.create(fleet=fleet, name="Depot Nord")
    make_vehicle(fleet, site=site, cluster="north", segment="vans")
    make_vehicle(fleet, id="ev-2", is_v2g=False)
    make_vehicle(fleet, id="ev-3", active=False)
    make_vehicle(fleet, id="ev-4", max_discharge_kw=0)
    vehicle = Vehicle.objects.get(id="ev-1")
    assert (vehicle.min_soc, vehicle.target_soc, vehicle.priority, vehicle.active) == (0.2, 0.8, 0, True)
    assert list(Vehicle.objects.v2g().values_list("id", flat=True)) == ["ev-1"]
    assert sorted(Vehicle.objects.active().values_list("id", flat=True)) == ["ev-1", "ev-2", "ev-4"]
    Fleet.objects.filter(id=fleet.id).update(active=False)
    assert not Vehicle.objects.active().exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"min_soc": 1.5},
        {"target_soc": -0.1},
        {"battery_kwh": 0},
        {"max_charge_kw": -1},
        {"max_discharge_kw": -7.4},
    ],
)
def test_database_refuses_impossible_vehicles(fleet, fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_vehicle(fleet, **fields)


def test_site_names_are_unique_per_fleet(fleet):
    Site.objects.create(fleet=fleet, name="Depot")
    Site.objects.create(fleet=Fleet.objects.create(id="lyon", name="Lyon"), name="Depot")
    with pytest.raises(IntegrityError), transaction.atomic():
        Site.objects.create(fleet=fleet, name="Depot")


def test_vehicle_site_must_belong_to_its_fleet(fleet):
    other_site = Site.objects.create(fleet=Fleet.objects.create(id="lyon", name="Lyon"), name="Depot")
    vehicle = Vehicle(
        id="ev-9", fleet=fleet, site=other_site, battery_kwh=40, max_charge_kw=7, max_discharge_kw=7
    )
    with pytest.raises(ValidationError, match="another fleet"):
        vehicle.full_clean()


def test_vehicle_id_must_be_safe_in_topics(fleet):
    vehicle = Vehicle(id="ev/1/#", fleet=fleet, battery_kwh=40, max_charge_kw=7, max_discharge_kw=7)
    with pytest.raises(ValidationError) as caught:
        vehicle.full_clean()
    assert "id" in caught.value.message_dict


def test_fleet_with_vehicles_cannot_be_deleted_by_accident(fleet):
    from django.db.models import ProtectedError

    make_vehicle(fleet)
    with pytest.raises(ProtectedError):
        fleet.delete()
