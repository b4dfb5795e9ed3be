"""Plan exports, byte for byte: CSV and JSON, on the daylight-saving days."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from scheduler import exports
from scheduler.models import Plan
from tests.scheduler.plans import stored_plan

pytestmark = pytest.mark.django_db

AUTUMN = date(2025, 10, 26)  # 100 quarter-hours: 02:00-02:59 twice, +02:00 then +01:00
SPRING = date(2025, 3, 30)  # 92 quarter-hours: 02:00-02:59 does not exist


def test_csv_of_the_autumn_day_byte_for_byte():
    plan = stored_plan(
        AUTUMN,
        {
            (0, "ev-b"): 7.4,
            (0, "ev-a"): -3.25,
            (8, "ev-a"): 1.0,  # 02:00 summer time
            (12, "ev-a"): 2.0004,  # 02:00 again, winter time; rounded to whole watts
            (12, "ev-10"): 11.0,
            (12, "ev-9"): -0.0004,  # below a watt: not an entry
            (99, "ev-b"): 0.1,  # 23:45, the day's last slot
        },
    )
    assert exports.plan_csv(plan) == (
        b"vehicle_id,timeslot,power_kw\n"
        b"ev-a,2025-10-26T00:00:00+02:00,-3.250\n"
        b"ev-b,2025-10-26T00:00:00+02:00,7.400\n"
        b"ev-a,2025-10-26T02:00:00+02:00,1.000\n"
        b"ev-10,2025-10-26T02:00:00+01:00,11.000\n"
        b"ev-a,2025-10-26T02:00:00+01:00,2.000\n"
        b"ev-b,2025-10-26T23:45:00+01:00,0.100\n"
    )
    assert plan.slot_count == 100 and plan.entry_count == 6
    # The same plan exports the same bytes every time.
    assert exports.plan_csv(Plan.objects.get(id=plan.id)) == exports.plan_csv(plan)


def test_csv_of_the_spring_day_skips_the_missing_hour():
    plan = stored_plan(SPRING, {(7, "ev-1"): 5.0, (8, "ev-1"): 5.0, (91, "ev-1"): -2.0})
    assert plan.slot_count == 92
    assert exports.plan_csv(plan) == (
        b"vehicle_id,timeslot,power_kw\n"
        b"ev-1,2025-03-30T01:45:00+01:00,5.000\n"
        b"ev-1,2025-03-30T03:00:00+02:00,5.000\n"
        b"ev-1,2025-03-30T23:45:00+02:00,-2.000\n"
    )


def test_an_empty_plan_is_the_header_line():
    assert exports.plan_csv(stored_plan(SPRING, {})) == b"vehicle_id,timeslot,power_kw\n"


def test_json_of_the_autumn_day_byte_for_byte():
    plan = stored_plan(AUTUMN, {(8, "ev-a"): 2.5, (12, "ev-a"): -1.25, (12, "ev-b"): 4.0})
    created = datetime(2025, 10, 25, 10, 0, 1, tzinfo=UTC)
    Plan.objects.filter(id=plan.id).update(created_at=created)
    plan.refresh_from_db()
    body = exports.plan_json(plan)

    def slot(k: int, label: str, planned: float) -> str:
        shortfall = max(0.0, 10.0 - planned)
        return (
            f'{{"slot":{k},"timeslot":"{label}","target_kw":10.0,"planned_kw":{planned!r},'
            f'"shortfall_kw":{shortfall!r},"planned_mw":{round(planned / 1000, 6)!r}}}'
        )

    labels = [f"2025-10-26T{h:02d}:{m:02d}:00+02:00" for h in range(3) for m in (0, 15, 30, 45)]
    labels += [f"2025-10-26T{h:02d}:{m:02d}:00+01:00" for h in range(2, 24) for m in (0, 15, 30, 45)]
    planned = {8: 2.5, 12: 2.75}
    slots = ",".join(slot(k, label, planned.get(k, 0.0)) for k, label in enumerate(labels))
    expected = (
        f'{{"plan_id":"{plan.id}","day":"2025-10-26","version":1,"status":"draft","fleet_id":null,'
        '"time_zone":"Europe/Paris","slot_minutes":15,"slot_count":100,'
        '"created_at":"2025-10-25T10:00:01+00:00","decided_at":null,"decided_by":null,'
        f'"inputs_digest":"{plan.inputs_digest}",'
        '"solver":{"status":"optimal","objective":12.5,"gap":0.0,"solve_s":0.25},"messages":[],'
        '"totals":{"target_kwh":250.0,"planned_kwh":1.312,"shortfall_kwh":248.688,"vehicles":0,"entries":3},'
        f'"slots":[{slots}],'
        '"entries":['
        '{"vehicle_id":"ev-a","slot":8,"timeslot":"2025-10-26T02:00:00+02:00","power_kw":2.500},'
        '{"vehicle_id":"ev-a","slot":12,"timeslot":"2025-10-26T02:00:00+01:00","power_kw":-1.250},'
        '{"vehicle_id":"ev-b","slot":12,"timeslot":"2025-10-26T02:00:00+01:00","power_kw":4.000}'
        "]}\n"
    ).encode()
    assert body == expected
    parsed = json.loads(body)
    assert len(parsed["slots"]) == 100
    assert (
        sum(e["power_kw"] for e in parsed["entries"] if e["slot"] == 12) == parsed["slots"][12]["planned_kw"]
    )


def test_the_exports_stream_in_chunks(monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_ROWS", 2)
    plan = stored_plan(SPRING, {(k, f"ev-{v}"): 1.0 for k in range(3) for v in range(3)})
    chunks = list(exports.plan_csv_chunks(plan))
    assert len(chunks) > 3
    assert b"".join(chunks).count(b"\n") == 10
    assert json.loads(b"".join(exports.plan_json_chunks(plan)))["totals"]["entries"] == 9
