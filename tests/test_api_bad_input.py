"""Hand-written bad input for every operation of the API (SPEC §14), beside the
schema fuzzing of tests/test_api_fuzz.py: what a generator does not think of.
Operations come from the OpenAPI schema (tests/api_routes.py), so a new
endpoint is covered without being listed here. Never a 5xx; every 4xx is JSON
naming the problem; nothing recorded is changed by a refused request."""

from __future__ import annotations

import json
from base64 import b64encode
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest
from django.urls import resolve
from rest_framework.views import APIView

from dispatch.log import dispatch_log_write
from fleet.models import Fleet, Site, Vehicle
from tests.api_routes import api_routes, operations
from tests.conftest import operator

pytestmark = pytest.mark.django_db

IDS = {"id": "ev-0", "date": "2026-03-01"}
# A fleet's and a dispatch's detail take their own ids.
IDS_BY_PREFIX = {
    "/api/fleets/": {"id": "paris-vans"},
    "/api/dispatches/": {"id": "0" * 8 + "-0000-0000-0000-" + "0" * 12},
}

BODY_OPERATIONS = [op for op in operations() if op.has_body]
READ_OPERATIONS = [op for op in operations() if op.method == "GET"]


def url_of(op) -> str:
    values = dict(IDS)
    for prefix, given in IDS_BY_PREFIX.items():
        if op.path.startswith(prefix):
            values.update(given)
    return op.url(**values)


@pytest.fixture
def fleet():
    fleet = Fleet.objects.create(id="paris-vans", name="Paris vans")
    site = Site.objects.create(fleet=fleet, name="Depot")
    for n in range(2):
        Vehicle.objects.create(
            id=f"ev-{n}", fleet=fleet, site=site, battery_kwh=52, max_charge_kw=11, max_discharge_kw=7
        )
    return fleet


@pytest.fixture
def api(client):
    """conftest's api (an operator of every fleet), without hashing a password for
    each of these many short tests; a 5xx comes back as a response to assert on."""
    client.force_login(operator("bad-input-operator", password=None))
    client.raise_request_exception = False
    return client


def send(api, op, body: bytes | str, content_type: str = "application/json"):
    return api.generic(op.method, url_of(op), body, content_type=content_type)


def registry_unchanged() -> bool:
    return list(Vehicle.objects.order_by("id").values_list("id", "fleet_id", "site__name")) == [
        ("ev-0", "paris-vans", "Depot"),
        ("ev-1", "paris-vans", "Depot"),
    ] and list(Fleet.objects.values_list("id", "name")) == [("paris-vans", "Paris vans")]


def test_the_schema_has_the_operations_these_tests_expect():
    names = {str(op) for op in operations()}
    assert {"POST /api/signals/", "PATCH /api/vehicles/{id}/", "GET /api/dispatch/logs"} <= names
    assert len(BODY_OPERATIONS) >= 5 and len(READ_OPERATIONS) >= 10


# --- bodies ---------------------------------------------------------------------

BAD_BODIES = [
    # (what, body, content type, status, words the answer names)
    ("nested arrays", "[" * 5000 + "]" * 5000, "application/json", 400, "levels deep"),  # was a 500
    ("nested objects", '{"a":' * 5000 + "1" + "}" * 5000, "application/json", 400, "levels deep"),  # a 500
    ("nested 40 deep", json.dumps({"tags": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}), "application/json", 400, "levels deep"),
    ("invalid UTF-8", b'{"name": "\xff\xfe"}', "application/json", 400, "utf-8"),
    ("truncated JSON", '{"name": "x', "application/json", 400, "JSON parse error"),
    ("NaN", '{"power_kw": NaN}', "application/json", 400, "NaN"),
    ("a 5,000-digit number", '{"power_kw": ' + "9" * 5000 + "}", "application/json", 400, "digits"),
    ("a list", "[1, 2]", "application/json", 400, "Expected a dictionary"),
    ("a string", '"x"', "application/json", 400, "Expected a dictionary"),
    ("XML", "<vehicle/>", "application/xml", 415, "application/xml"),
    ("plain text", "name=x", "text/plain", 415, "text/plain"),
    ("a made-up content type", "{}", "application/x-v2g", 415, "application/x-v2g"),
    ("3 MB", b'{"name": "' + b"x" * 3_000_000 + b'"}', "application/json", 413, "limit of 2621440 bytes"),  # was HTML
]  # fmt: skip


def failures(cases, check) -> list:
    """Run ``check`` on every case; the cases it fails, with why (one test per
    operation, every case in it: a test per case would cost more set-up than work)."""
    failed = []
    for case in cases:
        try:
            check(case)
        except AssertionError as exc:
            failed.append((case if isinstance(case, str) else case[0], str(exc)[:300]))
    return failed


@pytest.mark.parametrize("op", BODY_OPERATIONS, ids=str)
def test_a_bad_body_is_refused_naming_the_problem(api, fleet, op):
    def check(case):
        _what, body, content_type, status, named = case
        response = send(api, op, body, content_type)
        assert response.status_code == status, response.content[:300]
        assert response["Content-Type"] == "application/json"
        assert named in json.dumps(response.json()), response.json()
        assert registry_unchanged()

    assert failures(BAD_BODIES, check) == []


@pytest.mark.parametrize("op", BODY_OPERATIONS, ids=str)
def test_a_body_nested_within_the_limit_still_reaches_the_serializer(api, fleet, op):
    response = send(api, op, json.dumps({"tags": [[[["x"]]]]}))

    assert response.status_code < 500
    assert "levels deep" not in response.content.decode()


# --- formats, suffixes, query strings ------------------------------------------

FORMAT_VARIANTS = ["?format=json", "?format=api", ".json", ".json/", "/.json", ".xyz", ".csv"]
ODD_QUERIES = [
    "bogus=1",  # filters ignore parameters they do not know
    "fleet_id=%ff%fe&site=%c3%28",  # invalid UTF-8 (read as U+FFFD)
    "start=a&start=b&end=",  # repeated and empty
    "limit=1&limit=99999",
    "vehicle_id=" + quote("x" * 10_000),
    "cursor=" + quote("\U0001f697"),
    "hours=1e400&version=-1",
]


@pytest.mark.parametrize("op", READ_OPERATIONS, ids=str)
def test_an_unknown_format_is_a_404_naming_it(api, fleet, op):
    response = api.get(url_of(op), {"format": "xyz"})

    assert response.status_code == 404
    detail = response.json()["detail"]
    # Views that check their object first say what is missing; the others, the format.
    assert "'xyz'" in detail or "no approved plan" in detail, detail


@pytest.mark.parametrize("op", operations(), ids=str)
def test_format_suffixes_and_overrides_never_fail(api, fleet, op):
    def check(variant):
        url = url_of(op)
        url = url + variant if variant.startswith("?") else url.rstrip("/") + variant
        response = api.generic(op.method, url, "{}", content_type="application/json")
        assert response.status_code < 500, response.content[:300]  # .json on a ViewSet action was a 500
        if response.status_code >= 400 and variant != "?format=api":  # api: the browsable HTML asked for
            assert response["Content-Type"] == "application/json"
            assert response.json()

    assert failures(FORMAT_VARIANTS, check) == []
    assert registry_unchanged() or op.method != "GET"


@pytest.mark.parametrize("op", READ_OPERATIONS, ids=str)
def test_odd_query_strings_never_fail(api, fleet, op):
    def check(query):
        response = api.get(f"{url_of(op)}?{query}")
        assert response.status_code < 500, response.content[:300]
        if response.status_code == 400:
            assert set(response.json()) <= set(op.parameters) | {"detail"}, response.json()

    assert failures(ODD_QUERIES, check) == []


def test_invalid_utf8_in_the_path_is_a_json_4xx(api, fleet):
    for path in ["/api/vehicles/%ff/", "/api/vehicles/%ff/kpis", "/api/plans/%ff/", "/api/fleets/%c3%28/"]:
        response = api.get(path)

        assert 400 <= response.status_code < 500, path
        assert response["Content-Type"] == "application/json", path


# --- cursors ----------------------------------------------------------------------


def cursor(text: str) -> str:
    return b64encode(text.encode()).decode()


def position(values: str) -> str:
    return cursor("p=" + quote(values))


MALFORMED_CURSORS = [
    "zzz",
    "%%%",
    cursor("p=not-json"),
    cursor("r=1"),
    position('["2026-03-01T08:00:00Z"]'),  # one value short
    position('["2026-03-01T08:00:00Z", "1\\u0000"]'),  # NUL
    position('["2026-03-01T08:00:00Z", NaN]'),
    position('["99999-03-01T08:00:00Z", 1]'),
    position('[{"a": 1}, [1]]'),
    position("[null, null]"),  # was a silent empty page
    position("[true, false]"),
    b64encode(b"p=\xff\xfe").decode(),
]
# Well-formed, never issued: a page (maybe empty), never a 5xx.
FORGED_CURSORS = [
    position('["2026-03-01T08:00:00Z", 99999999999999999999999]'),  # beyond bigint
    position('["2026-03-01T08:00:00Z", -99999999999999999999999]'),
    position('["0001-01-01T00:00:00+14:00", 1]'),  # before year 1 in UTC
    position('["2026-03-01T08:00:00Z", 1.5]'),
]


def test_a_malformed_or_forged_cursor_is_a_400_naming_it_never_a_5xx(api, fleet):
    at = datetime(2026, 3, 1, 8, tzinfo=UTC)
    dispatch_log_write([{
        "at": at, "command_id": f"00000000-0000-0000-0000-00000000000{n}", "dispatch_id": "10000000-0000-0000-0000-000000000000",
        "signal_id": "20000000-0000-0000-0000-000000000000", "signal_type": "FCR", "target_kw": 10.0, "vehicle_id": f"ev-{n}",
        "allocated_kw": 5.0, "setpoint_kw": 5.0, "status": "acked", "acknowledged": True, "ack_latency_s": 0.1,
        "fallback_round": 0, "score": None,
    } for n in range(2)])  # fmt: skip

    def get(forged, ordering):
        return api.get("/api/dispatch/logs?" + urlencode({"cursor": forged, "ordering": ordering}))

    def malformed(forged):
        for ordering in ("-at", "at"):
            response = get(forged, ordering)
            assert response.status_code == 400, response.content[:300]
            assert list(response.json()) == ["cursor"]

    def forged(forged):
        for ordering in ("-at", "at"):
            response = get(forged, ordering)
            assert response.status_code in (200, 400), response.content[:300]
            assert "results" in response.json() or list(response.json()) == ["cursor"]

    assert failures(MALFORMED_CURSORS, malformed) == []
    assert failures(FORGED_CURSORS, forged) == []


# --- every route is in the schema -------------------------------------------------


def test_every_api_route_serves_a_documented_operation():
    """The tests that walk the schema (these, the fleet isolation ones, the fuzzer)
    cover every route: an undocumented /api/ route would escape them."""
    from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
    from rest_framework.routers import APIRootView

    documented = {view_class_of(url_of(op)) for op in operations()}
    plumbing = {SpectacularAPIView, SpectacularSwaggerView}
    undocumented = [
        route
        for route, view in api_routes()
        if view not in documented | plumbing and not issubclass(view, APIRootView)
    ]
    assert undocumented == []
    assert all(issubclass(view, APIView) for view in documented)


def view_class_of(url: str):
    callback = resolve(url).func
    return getattr(callback, "cls", None) or callback.view_class
