"""Per-fleet isolation on EVERY operation of the API, walked from its OpenAPI
schema (tests/api_routes.py; tests/test_api_bad_input.py proves every /api/
route is in it): a token of fleet A, aimed at everything of fleet B (its ids in
the path, its fleet in every query parameter and body field that names one),
never sees B's objects (404, 403 or a list without them) and never changes
them. A new endpoint is covered without being listed here. The rules per
endpoint are in tests/fleet/test_auth.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from dispatch.log import dispatch_log_write
from dispatch.models import Dispatch, FlexibilitySignal
from fleet import services
from fleet.models import Fleet, Site, Vehicle
from scheduler import services as plan_services
from scheduler.models import Plan
from tests.api_routes import operations
from tests.conftest import operator
from tests.scheduler.plans import DAY, NOW, stored_plan

pytestmark = pytest.mark.django_db

B_MARKERS = ("fleet-b", "ev-b", "depot-b")


@pytest.fixture
def fleets() -> dict:
    """Fleets A and B, each with a site, a vehicle, a signal with its dispatch, a
    dispatch log record and an approved plan (B's on DAY, A's the day after)."""
    made: dict = {}
    approver = operator("approver", password=None)
    for name, day in (("a", DAY + timedelta(days=1)), ("b", DAY)):
        fleet = Fleet.objects.create(id=f"fleet-{name}", name=f"Fleet {name}")
        site = Site.objects.create(fleet=fleet, name=f"depot-{name}")
        vehicle = Vehicle.objects.create(
            id=f"ev-{name}", fleet=fleet, site=site, cluster=f"cluster-{name}", battery_kwh=50,
            max_charge_kw=11, max_discharge_kw=11,
        )  # fmt: skip
        now = timezone.now()
        signal = FlexibilitySignal.objects.create(
            signal_type="FCR", power_kw=10, start_at=now, duration_s=300, valid_until=now + timedelta(minutes=5),
            fleet=fleet,
        )  # fmt: skip
        dispatch = Dispatch.objects.create(signal=signal, round=0, target_kw=10)
        dispatch_log_write([{
            "at": datetime(2026, 3, 1, 8, tzinfo=UTC), "command_id": f"00000000-0000-0000-0000-00000000000{len(made)}",
            "dispatch_id": dispatch.id, "signal_id": signal.id, "signal_type": "FCR", "target_kw": 10.0,
            "vehicle_id": vehicle.id, "allocated_kw": 5.0, "setpoint_kw": 5.0, "status": "acked",
            "acknowledged": True, "ack_latency_s": 0.1, "fallback_round": 0, "score": None,
        }])  # fmt: skip
        plan = stored_plan(day, {(40, vehicle.id): 5.0}, fleet_id=fleet.id)
        plan_services.plan_approve(plan.id, user=approver, now=NOW)
        made[name] = {"fleet": fleet, "vehicle": vehicle, "dispatch": dispatch, "signal": signal, "day": day}
    return made


def b_state() -> list:
    """Everything of fleet B a request could change."""
    b = Fleet.objects.filter(id="fleet-b")
    return [
        [model_to_dict(f) for f in b],
        [model_to_dict(s) for s in Site.objects.filter(fleet__in=b)],
        [model_to_dict(v) for v in Vehicle.objects.filter(fleet__in=b)],
        [model_to_dict(s) for s in FlexibilitySignal.objects.filter(fleet__in=b)],
        [model_to_dict(d) for d in Dispatch.objects.filter(signal__fleet__in=b)],
        sorted(Plan.objects.filter(fleet_id="fleet-b").values_list("id", "status")),
    ]


def aimed_at_b(op, fleets) -> tuple[str, dict]:
    """The request of ``op`` pointing at fleet B wherever it can: B's objects in
    the path, B's fleet in every query parameter and body field naming one."""
    b = fleets["b"]
    values = {"id": b["vehicle"].id, "date": b["day"].isoformat()}
    if op.path.startswith("/api/fleets/"):
        values["id"] = b["fleet"].id
    elif op.path.startswith("/api/dispatches/"):
        values["id"] = str(b["dispatch"].id)
    query = {
        "fleet_id": "fleet-b", "site": "depot-b", "cluster": "cluster-b", "vehicle_id": "ev-b",
        "dispatch_id": str(b["dispatch"].id), "version": "1",
    }  # fmt: skip
    url = op.url(**values)
    params = "&".join(f"{k}={v}" for k, v in query.items() if k in op.parameters)
    body = {
        "id": "ev-new", "fleet": "fleet-b", "fleet_id": "fleet-b", "site": "depot-b", "name": "taken",
        "signal_type": "FCR", "power_kw": 5, "duration_s": 60, "battery_kwh": 40, "max_charge_kw": 7,
        "max_discharge_kw": 7, "min_soc": 0.1,
    }  # fmt: skip
    return (f"{url}?{params}" if params else url), body


def body_of(response) -> str:
    raw = b"".join(response.streaming_content) if response.streaming else response.content
    return raw.decode(errors="replace")


def test_every_operation_keeps_fleet_b_from_a_token_of_fleet_a(client, fleets):
    token = services.api_token_create(name="a", fleet_ids=["fleet-a"], all_fleets=False)[1]
    headers = {"Authorization": f"Bearer {token}"}
    before = b_state()
    leaks = []
    for op in operations():
        url, body = aimed_at_b(op, fleets)
        response = client.generic(
            op.method, url, json.dumps(body) if op.has_body else "", content_type="application/json",
            headers=headers,
        )  # fmt: skip
        text = body_of(response)
        if response.status_code in (403, 404):
            continue
        if response.status_code >= 500 or any(marker in text for marker in B_MARKERS):
            leaks.append(f"{op} -> {url}: {response.status_code} {text[:200]}")
    assert leaks == []
    assert b_state() == before


def test_the_same_requests_reach_fleet_b_with_a_token_of_fleet_b(client, fleets):
    """The counter-proof: the requests above do point at B's objects (otherwise
    the isolation test would pass by missing them)."""
    token = services.api_token_create(name="b", fleet_ids=["fleet-b"], all_fleets=False)[1]
    headers = {"Authorization": f"Bearer {token}"}
    missed = []
    for op in operations():
        if op.method != "GET":
            continue
        url, _ = aimed_at_b(op, fleets)
        response = client.get(url, headers=headers)
        text = body_of(response)
        if response.status_code != 200 or not any(m in text for m in B_MARKERS):
            missed.append(f"{op} -> {url}: {response.status_code} {text[:200]}")
    # Endpoints whose answer holds no fleet, vehicle or site name (counts, a CSV of
    # vehicle ids is included) are listed here with why, so that a new one is a decision.
    without_names = {
        "GET /api/dashboard/summary",  # totals of the token's fleets only
        "GET /api/plans/{date}/delivery",  # per-slot energy of the plan; reached: 200, not 404
    }
    assert [m for m in missed if m.split(" ->")[0] not in without_names] == []
