"""What every REST endpoint shares (v2g_project/api.py): strict, bounded
limit/offset pages, JSON 404s under /api/, and the refusal of NUL characters.
Each case was a 5xx, an HTML page or a silently ignored parameter before;
fuzzing the API against its OpenAPI schema found them."""

from __future__ import annotations

import pytest

from fleet.models import Fleet, Site, Vehicle

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    fleet = Fleet.objects.create(id="paris-vans", name="Paris vans")
    site = Site.objects.create(fleet=fleet, name="Depot")
    for n in range(3):
        Vehicle.objects.create(
            id=f"ev-{n}", fleet=fleet, site=site, battery_kwh=52, max_charge_kw=11, max_discharge_kw=7
        )
    return fleet


@pytest.mark.parametrize("url", ["/api/vehicles/", "/api/fleets/", "/api/vehicles/status"])
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=null", "limit"),
        ("limit=0", "limit"),
        ("limit=+5", "limit"),
        ("limit=10001", "limit"),
        ("limit=13819670054483435320057886144462848", "limit"),  # was a 500: beyond a 64-bit LIMIT
        ("offset=-1", "offset"),
        ("offset=1_0", "offset"),
        ("offset=99999999999999999999", "offset"),
    ],
)
def test_a_bad_limit_or_offset_is_a_400_naming_it(api, fleet, url, query, param):
    response = api.get(f"{url}?{query}")
    assert response.status_code == 400, response.content
    assert list(response.json()) == [param]


def test_limit_and_offset_page_through(api, fleet):
    first = api.get("/api/vehicles/?limit=2").json()
    assert [v["id"] for v in first["results"]] == ["ev-0", "ev-1"]
    assert "offset=2" in first["next"]
    assert [v["id"] for v in api.get(first["next"]).json()["results"]] == ["ev-2"]
    assert api.get("/api/vehicles/?limit=10000&offset=9223372036854775807").json()["results"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/no-such-endpoint/",
        "/api/dispatches/not-a-uuid/",  # outside the route's pattern: Django's 404, not the view's
        "/api/vehicles/ev-0/extra/",
    ],
)
def test_unknown_api_urls_are_a_json_404(api, url):
    response = api.get(url)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_outside_the_api_a_404_is_still_a_page(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/vehicles/?cluster=a%00b", "cluster"),  # was a 500 on PostgreSQL
        ("/api/vehicles/status?site=%00", "site"),
        ("/api/dispatch/logs?vehicle_id=ev%00", "vehicle_id"),
        ("/api/fleets/?limit=5&x=%00", "x"),
    ],
)
def test_a_nul_in_a_query_parameter_is_a_400_naming_it(api, fleet, url, param):
    response = api.get(url)
    assert response.status_code == 400
    assert response.json() == {param: ["must not contain a NUL character (U+0000)"]}


@pytest.mark.parametrize("url", ["/api/vehicles/ev%000/", "/api/fleets/paris%00/"])
def test_a_nul_in_the_path_is_a_404(api, fleet, url):
    response = api.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize(
    ("method", "url", "body", "where"),
    [
        ("post", "/api/vehicles/", {"id": "ev-9", "fleet": "paris-vans", "site": "De\x00pot"}, "site"),
        ("post", "/api/vehicles/", {"id": "ev-9", "fleet": "paris\x00"}, "fleet"),
        ("patch", "/api/fleets/paris-vans/", {"name": "Paris\x00"}, "name"),
        ("post", "/api/signals/", {"signal_type": "FCR", "tags": ["a", "b\x00"]}, "tags.1"),
        ("post", "/api/signals/", {"\x00": 1}, "\\x00"),
    ],
)
def test_a_nul_anywhere_in_a_body_is_a_400_saying_where(api, fleet, method, url, body, where):
    response = getattr(api, method)(url, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": f"a NUL character (U+0000) in the body, at {where}"}
    assert Vehicle.objects.count() == 3 and Fleet.objects.get().name == "Paris vans"


def test_a_nul_in_a_form_body_is_refused_too(api, fleet):
    response = api.patch(
        "/api/fleets/paris-vans/", "name=Paris%00", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]
