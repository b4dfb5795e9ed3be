"""The KPI gauges on a /metrics scrape."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kpis import services
from tests.conftest import replace
from tests.kpis.fixtures import command, vehicle

pytestmark = pytest.mark.django_db


def scrape(client) -> dict[tuple[str, str, str], float]:
    text = client.get("/metrics").content.decode()
    return {
        (sample.name, sample.labels["vehicle"], sample.labels["day"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("vehicle_") and "day" in sample.labels
    }


def test_gauges_of_the_last_days(client, settings, monkeypatch):
    now = dt.datetime.fromisoformat("2025-06-05T12:00:00+02:00")
    monkeypatch.setattr(services.timezone, "now", lambda: now)
    settings.V2G = replace(
        settings.V2G, metrics=replace(settings.V2G.metrics, kpi_days_exposed=2, emission_factor=100.0)
    )
    vehicle("car.1")
    command("car.1", 10, "2025-06-03T10:00:00+02:00", 1800)  # the 3rd: outside the 2 days exposed
    command("car.1", 10, "2025-06-04T10:00:00+02:00", 1800)  # the 4th: 5 kWh, nothing consumed
    command("car.1", 4, "2025-06-05T08:00:00+02:00", 3600)  # the 5th: 4 kWh injected
    command("car.1", -8, "2025-06-05T10:00:00+02:00", 900)  # and 2 kWh consumed
    services.kpis_compute_range(dt.date(2025, 6, 3), dt.date(2025, 6, 5))
    assert scrape(client) == {
        ("vehicle_injected_energy_kwh", "car.1", "2025-06-04"): 5.0,
        ("vehicle_co2_avoided_grams", "car.1", "2025-06-04"): 500.0,
        ("vehicle_injected_energy_kwh", "car.1", "2025-06-05"): 4.0,
        ("vehicle_co2_avoided_grams", "car.1", "2025-06-05"): 400.0,
        ("vehicle_energy_ratio", "car.1", "2025-06-05"): 2.0,  # and none for the 4th: nothing consumed
    }


def test_no_rows_no_samples(client):
    text = client.get("/metrics").content.decode()
    assert "# TYPE vehicle_energy_ratio gauge" in text
    assert "vehicle_energy_ratio{" not in text
