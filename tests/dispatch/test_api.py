"""POST /api/signals/ and GET /api/dispatches/{id}/."""

from __future__ import annotations

import uuid

import pytest

from dispatch.models import Dispatch, FlexibilitySignal
from fleet.models import Fleet

pytestmark = pytest.mark.django_db


def post(api, **body):
    return api.post("/api/signals/", body, content_type="application/json")


def test_submit_a_signal_and_follow_its_dispatch(api):
    response = post(api, signal_type="FCR", power_kw=20, duration_s=300)
    assert response.status_code == 201, response.json()
    body = response.json()
    signal = FlexibilitySignal.objects.get(id=body["signal_id"])
    assert (signal.signal_type, signal.power_kw, signal.duration_s, signal.source) == ("FCR", 20, 300, "api")
    assert signal.valid_until == signal.start_at + (signal.valid_until - signal.start_at)
    assert body["url"].endswith(f"/api/dispatches/{body['dispatch_id']}/")
    assert response["Location"] == body["url"]

    detail = api.get(body["url"]).json()
    assert detail["dispatch_id"] == body["dispatch_id"]
    assert detail["requested_kw"] == 20 and detail["status"] == "in_progress"
    assert [r["round"] for r in detail["rounds"]] == [0]
    assert detail["signal"]["signal_type"] == "FCR" and detail["commands"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"signal_type": "XYZ", "power_kw": 1, "duration_s": 60}, "signal_type"),
        ({"signal_type": "FCR", "power_kw": "lots", "duration_s": 60}, "power_kw"),
        ({"signal_type": "FCR", "power_kw": 1, "duration_s": 0}, "duration_s"),
        ({"signal_type": "FCR", "power_kw": 1}, "duration_s"),
        ({"signal_type": "FCR", "power_kw": 1, "duration_s": 60, "start_at": "yesterday"}, "start_at"),
        (
            {"signal_type": "FCR", "power_kw": 1, "duration_s": 60, "valid_until": "2020-01-01T00:00:00Z"},
            "valid_until",
        ),
        ({"signal_type": "FCR", "power_kw": 1, "duration_s": 60, "fleet_id": "nowhere"}, "fleet_id"),
        # Was a 500: start + duration past year 9999.
        (
            {"signal_type": "FCR", "power_kw": 1, "duration_s": 60, "start_at": "9999-12-31T23:59:59Z"},
            "start_at",
        ),
        ({"signal_type": "FCR", "power_kw": 1, "duration_s": 604801}, "duration_s"),
    ],
)
def test_bad_signals_are_refused_naming_the_field(api, body, field):
    response = post(api, **body)
    assert response.status_code == 400
    assert field in response.json()
    assert not FlexibilitySignal.objects.exists()


def test_the_same_external_id_is_accepted_once(api):
    Fleet.objects.create(id="f1", name="F1")
    first = post(
        api, signal_type="mFRR", power_kw=-15, duration_s=900, external_id="rte-42", fleet_id="f1"
    ).json()
    again = post(
        api, signal_type="mFRR", power_kw=-15, duration_s=900, external_id="rte-42", fleet_id="f1"
    ).json()
    assert first["dispatch_id"] == again["dispatch_id"]
    assert FlexibilitySignal.objects.count() == 1 and Dispatch.objects.count() == 1


def test_unknown_or_malformed_dispatch_ids_are_404(api):
    assert api.get(f"/api/dispatches/{uuid.uuid4()}/").status_code == 404
    assert api.get("/api/dispatches/" + "-" * 36 + "/").status_code == 404


def test_signals_need_a_login(client):
    assert client.post("/api/signals/", {}, content_type="application/json").status_code == 401
