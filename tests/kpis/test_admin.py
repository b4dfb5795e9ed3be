"""The KPI admin: read-only rows, filters, totals of the filtered rows."""

from __future__ import annotations

import datetime as dt

import pytest

from kpis import services
from tests.kpis.fixtures import command, vehicle

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("boss", password="pw-boss-1"))
    return client


def test_changelist_totals_follow_the_filters(staff, settings):
    vehicle("ev-1")
    vehicle("ev-2", fleet_id="f2")
    command("ev-1", 10, "2025-06-03T10:00:00+02:00", 1800)  # 5 kWh
    command("ev-1", -2, "2025-06-04T10:00:00+02:00", 3600)  # 2 kWh consumed
    command("ev-2", 6, "2025-06-03T10:00:00+02:00", 600)  # 1 kWh
    services.kpis_compute_range(dt.date(2025, 6, 3), dt.date(2025, 6, 4))
    response = staff.get("/admin/kpis/vehicledaykpi/")
    assert response.status_code == 200
    totals = response.context["kpi_totals"]
    assert (totals["rows"], totals["vehicles"], totals["injected_kwh"], totals["consumed_kwh"]) == (
        3,
        2,
        6.0,
        2.0,
    )
    assert totals["energy_ratio"] == 3.0
    assert b'id="kpi-totals"' in response.content
    fleet = staff.get("/admin/kpis/vehicledaykpi/?vehicle__fleet__id__exact=f2").context["kpi_totals"]
    assert (fleet["rows"], fleet["injected_kwh"], fleet["energy_ratio"]) == (1, 1.0, None)
    day = staff.get("/admin/kpis/vehicledaykpi/?day=2025-06-04").context["kpi_totals"]
    assert (day["rows"], day["injected_kwh"], day["consumed_kwh"]) == (1, 0.0, 2.0)
    assert staff.get("/admin/kpis/vehicledaykpi/add/").status_code == 403
