"""GET /api/dispatch/logs (SPEC §9, §11): filters, ordering, cursor pages, bad
parameters, the jsonl backend, and the query plans on PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from base64 import b64encode
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatch.log import FIELDS, dispatch_log_write
from dispatch.models import DispatchLogEntry
from tests.conftest import replace

pytestmark = pytest.mark.django_db
URL = "/api/dispatch/logs"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TYPES = ("FCR", "aFRR", "mFRR")


def entry(at: datetime, vehicle_id: str, signal_type: str = "FCR", dispatch_id=None, **changes):
    return DispatchLogEntry(
        at=at, command_id=uuid.uuid4(), dispatch_id=dispatch_id or uuid.uuid4(), signal_id=uuid.uuid4(),
        signal_type=signal_type, target_kw=30.0, vehicle_id=vehicle_id, allocated_kw=10.0, setpoint_kw=10.0,
        status="acked", acknowledged=True, ack_latency_s=0.05, fallback_round=0, score=0.8, **changes,
    )  # fmt: skip


@pytest.fixture
def rounds():
    """12 rounds an hour apart (FCR, aFRR, mFRR in turn) of 3 vehicles each,
    every vehicle of a round logged at the same time as in the real log."""
    rows = []
    for r in range(12):
        dispatch_id = uuid.uuid4()
        for v in range(3):
            rows.append(entry(T0 + timedelta(hours=r), f"ev-{(r + v) % 5}", TYPES[r % 3], dispatch_id))
    return DispatchLogEntry.objects.bulk_create(rows)


def get(api, query: str = "", status: int = 200) -> dict:
    response = api.get(f"{URL}?{query}" if query else URL)
    assert response.status_code == status, response.content
    return response.json()


def iso(t: datetime) -> str:
    return quote(t.isoformat())


def walk(api, query: str) -> list[dict]:
    """Every record, following the next links."""
    body, seen = get(api, query), []
    while True:
        seen.extend(body["results"])
        if not body["next"]:
            return seen
        body = get(api, body["next"].split("?", 1)[1])


def key(row: dict) -> str:
    return row["command_id"]


def test_records_newest_first_with_every_field(api, rounds):
    body = get(api)
    assert set(body) == {"next", "previous", "results"}
    assert body["previous"] is None and body["next"] is None
    results = body["results"]
    assert len(results) == 36
    assert set(results[0]) == set(FIELDS)
    assert results[0]["at"] == "2026-03-01T19:00:00Z" and results[-1]["at"] == "2026-03-01T08:00:00Z"
    newest_first = sorted(rounds, key=lambda e: (e.at, e.id), reverse=True)  # ties: the latest insert first
    assert [key(r) for r in results] == [str(e.command_id) for e in newest_first]
    assert results[0]["dispatch_id"] == str(newest_first[0].dispatch_id)
    assert results[0]["ack_latency_s"] == 0.05 and results[0]["acknowledged"] is True


def test_a_trailing_slash_works_too(api, rounds):
    assert api.get(f"{URL}/?vehicle_id=ev-1").json() == get(api, "vehicle_id=ev-1")


def test_the_browsable_api_page_renders_with_its_filter_form(api, rounds):
    response = api.get(f"{URL}?page_size=5&signal_type=FCR", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b'name="vehicle_id"' in response.content and b"Next" in response.content


def test_each_filter(api, rounds):
    assert {r["vehicle_id"] for r in get(api, "vehicle_id=ev-2")["results"]} == {"ev-2"}
    assert len(get(api, "vehicle_id=ev-2")["results"]) == sum(e.vehicle_id == "ev-2" for e in rounds)
    assert {r["signal_type"] for r in get(api, "signal_type=aFRR")["results"]} == {"aFRR"}
    assert len(get(api, "signal_type=aFRR")["results"]) == 12
    start = get(api, f"start={iso(T0 + timedelta(hours=9))}")["results"]
    assert len(start) == 9 and min(r["at"] for r in start) == "2026-03-01T17:00:00Z"  # start is inclusive
    end = get(api, f"end={iso(T0 + timedelta(hours=2))}")["results"]
    assert len(end) == 6 and max(r["at"] for r in end) == "2026-03-01T09:00:00Z"  # end is exclusive
    dispatch_id = rounds[4].dispatch_id
    one = get(api, f"dispatch_id={dispatch_id}")["results"]
    assert len(one) == 3 and {r["dispatch_id"] for r in one} == {str(dispatch_id)}
    assert get(api, "vehicle_id=ev-404")["results"] == []  # an unknown vehicle: nothing, not an error


def test_filters_combine(api, rounds):
    start, end = T0 + timedelta(hours=3), T0 + timedelta(hours=9)
    query = f"start={iso(start)}&end={iso(end)}&signal_type=FCR&vehicle_id=ev-3"
    expected = {
        str(e.command_id)
        for e in rounds
        if start <= e.at < end and e.signal_type == "FCR" and e.vehicle_id == "ev-3"
    }
    assert expected and {key(r) for r in get(api, query)["results"]} == expected
    window = get(api, f"start={iso(start)}&end={iso(end)}")["results"]
    assert len(window) == 18


def test_times_in_any_offset_and_an_unencoded_plus(api, rounds):
    paris = "2026-03-01T10:00:00+01:00"  # 09:00 UTC
    assert len(get(api, f"start={quote(paris)}")["results"]) == 33
    assert len(get(api, "start=2026-03-01T10:00:00 01:00")["results"]) == 33  # "+" read as a space
    assert len(get(api, "start=2026-03-01T09:00:00Z")["results"]) == 33
    assert len(get(api, "start=2026-03-01T09:00:00.000001Z")["results"]) == 30


def test_ordering_oldest_first(api, rounds):
    results = get(api, "ordering=at")["results"]
    assert results[0]["at"] == "2026-03-01T08:00:00Z"
    newest_first = [key(r) for r in get(api, "ordering=-at")["results"]]
    assert [key(r) for r in results] == newest_first[::-1]  # the same total order, turned round


@pytest.mark.parametrize("ordering", ["-at", "at"])
def test_cursor_pages_cover_everything_once(api, ordering):
    """Pages of 7 over rounds of 10 vehicles logged at one time: page
    boundaries fall inside rounds, and nothing is skipped or repeated."""
    rows = [entry(T0 + timedelta(minutes=r), f"ev-{v}") for r in range(9) for v in range(10)]
    DispatchLogEntry.objects.bulk_create(rows)
    pages, body = [], get(api, f"ordering={ordering}&page_size=7")
    while True:
        pages.append(body)
        if not body["next"]:
            break
        body = get(api, body["next"].split("?", 1)[1])
    seen = [key(r) for page in pages for r in page["results"]]
    assert len(pages) == 13 and len(seen) == 90 and len(set(seen)) == 90
    assert seen == [key(r) for r in get(api, f"ordering={ordering}&page_size=1000")["results"]]
    assert pages[0]["previous"] is None and all(p["previous"] for p in pages[1:])
    # ... and back from the last page with the previous links, the same pages.
    back, body = [], pages[-1]
    while body["previous"]:
        body = get(api, body["previous"].split("?", 1)[1])
        back.append([key(r) for r in body["results"]])
    assert back == [[key(r) for r in p["results"]] for p in pages[-2::-1]]


def test_pages_with_filters_keep_the_filters(api, rounds):
    seen = walk(api, "signal_type=mFRR&page_size=2")
    assert len(seen) == 12 and {r["signal_type"] for r in seen} == {"mFRR"}
    assert len({key(r) for r in seen}) == 12


def test_records_written_by_the_log_appear(api):
    at = datetime.now(UTC)
    records = [
        {"at": at, "dispatch_id": uuid.uuid4(), "signal_id": uuid.uuid4(), "signal_type": "NEBEF",
         "target_kw": -20.0, "vehicle_id": f"ev-{n}", "command_id": uuid.uuid4(), "allocated_kw": -10.0,
         "setpoint_kw": -10.0, "status": "timed_out", "acknowledged": False, "ack_latency_s": None,
         "fallback_round": 1, "score": None}
        for n in range(2)
    ]  # fmt: skip
    dispatch_log_write(records)
    results = get(api, "signal_type=NEBEF")["results"]
    assert {r["vehicle_id"] for r in results} == {"ev-0", "ev-1"}
    assert results[0]["ack_latency_s"] is None and results[0]["fallback_round"] == 1
    assert results[0]["status"] == "timed_out" and results[0]["target_kw"] == -20.0


@pytest.mark.parametrize(
    ("query", "param", "says"),
    [
        ("start=yesterday", "start", "ISO 8601"),
        ("start=100%25", "start", "'100%'"),  # a % in the value or the message is no format string
        ("start=2026-03-01T08:00:00", "start", "offset"),
        ("end=2026-03-01", "end", "offset"),
        ("end=2026-13-01T08:00:00Z", "end", "ISO 8601"),
        ("start=2026-03-02T00:00:00Z&end=2026-03-01T00:00:00Z", "start", "after end"),
        ("start=9999-12-31T23:59:59-01:00", "start", "range"),
        ("signal_type=XYZ", "signal_type", "FCR, aFRR, mFRR, MA, NEBEF, EcoWatt"),
        ("signal_type=fcr", "signal_type", "unknown"),
        ("signal_type=%25s%25d", "signal_type", "%s%d"),
        ("dispatch_id=42", "dispatch_id", "UUID"),
        ("vehicle_id=" + "x" * 65, "vehicle_id", "64"),
        ("ordering=vehicle_id", "ordering", "-at, at"),
        ("page_size=0", "page_size", "1 to 1000"),
        ("page_size=1001", "page_size", "1 to 1000"),
        ("page_size=ten", "page_size", "1 to 1000"),
        ("cursor=%25%25not-base64", "cursor", "next or previous link"),
        ("cursor=" + quote(b64encode(b"p=%5B1%5D").decode()), "cursor", "next or previous link"),
        ("cursor=" + quote(b64encode(b"p=%5B%22soon%22%2C1%5D").decode()), "cursor", "next or previous link"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api, rounds, query, param, says):
    body = get(api, query, status=400)
    assert list(body) == [param]
    assert says in body[param][0]


def test_unknown_parameters_are_ignored(api, rounds):
    assert len(get(api, "colour=blue&limit=3")["results"]) == 36


def test_page_size_bounds(api, rounds):
    assert len(get(api, "page_size=1000")["results"]) == 36
    body = get(api, "page_size=1")
    assert len(body["results"]) == 1 and body["next"]


def test_jsonl_backend_is_a_409_naming_the_setting(api, rounds, settings):
    settings.V2G = replace(settings.V2G, logging=replace(settings.V2G.logging, backend="jsonl"))
    body = get(api, "", status=409)
    assert "logging.backend" in body["detail"] and "jsonl" in body["detail"]
    get(api, "start=nonsense", status=409)  # whatever the parameters: the answer is the setting


def test_login_required(client, rounds):
    assert client.get(URL).status_code in (401, 403)


# --- query plans (PostgreSQL) -----------------------------------------------------

PLAN_ROWS = 200_000


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.fixture
def big_log():
    """200,000 records: 2,000 rounds of 100 vehicles (of 1,000), 30 minutes
    apart, signal types in turn; analysed, as autovacuum would."""
    table = DispatchLogEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (at, command_id, dispatch_id, signal_id, signal_type, target_kw, vehicle_id,
                                 allocated_kw, setpoint_kw, status, acknowledged, ack_latency_s,
                                 fallback_round, score)
            SELECT %s::timestamptz + (g / 100) * interval '30 minutes',
                   md5('c' || g)::uuid, md5('d' || g / 100)::uuid, md5('s' || g / 100)::uuid,
                   (ARRAY['FCR','aFRR','mFRR','MA','NEBEF','EcoWatt'])[1 + (g / 100) %% 6],
                   500.0, 'ev-' || lpad(((g %% 100) * 10 + (g / 100) %% 10)::text, 4, '0'),
                   5.0, 5.0, 'acked', true, 0.05, 0, 0.7
            FROM generate_series(0, %s - 1) AS g
            """,
            [T0, PLAN_ROWS],
        )
        cursor.execute(f"ANALYZE {table}")
    return table


def _rows_read(node: dict) -> int:
    """Rows a scan node took from the table, kept or filtered out (EXPLAIN ANALYZE)."""
    loops = node.get("Actual Loops", 1)
    kept = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
    return (kept + node.get("Rows Removed by Index Recheck", 0)) * loops


@pytest.mark.skipif(connection.vendor != "postgresql", reason="query plans are checked on PostgreSQL")
def test_every_filter_is_served_by_an_index(api, big_log):
    """For each filter combination and both orderings, the first page, the
    next one and a page from a cursor in the middle of the table: the query
    the view runs reads the log through an index, never the whole table, and
    touches a bounded number of rows (a sort, when the planner picks one, is
    of the few rows a selective filter found through an index)."""
    from dispatch.api import DispatchLogPagination

    dispatch_id = str(uuid.UUID(hashlib.md5(b"d1234").hexdigest()))
    start, end = iso(T0 + timedelta(days=10)), iso(T0 + timedelta(days=30))
    middle = DispatchLogPagination().encode_position([(T0 + timedelta(days=20)).isoformat(), PLAN_ROWS // 2])
    queries = {
        "none": "",
        "start": f"start={start}",
        "end": f"end={end}",
        "start+end": f"start={start}&end={end}",
        "vehicle_id": "vehicle_id=ev-0421",
        "signal_type": "signal_type=aFRR",
        "dispatch_id": f"dispatch_id={dispatch_id}",
        "vehicle_id+signal_type": "vehicle_id=ev-0421&signal_type=aFRR",
        "vehicle_id+start+end": f"vehicle_id=ev-0421&start={start}&end={end}",
        "signal_type+start+end": f"signal_type=aFRR&start={start}&end={end}",
        "all": f"vehicle_id=ev-0421&signal_type=aFRR&start={start}&end={end}",
    }
    failures = []
    for name, query in queries.items():
        for ordering in ("-at", "at"):
            first = get(api, f"{query}&ordering={ordering}&page_size=50")
            assert first["results"], name
            pages = {
                "first page": f"{query}&ordering={ordering}&page_size=50",
                "middle page": f"{query}&ordering={ordering}&page_size=50&cursor={quote(middle)}",
            }
            if first["next"]:
                pages["next page"] = first["next"].split("?", 1)[1]
            for page, page_query in pages.items():
                with CaptureQueriesContext(connection) as captured:
                    get(api, page_query)
                sql = [q["sql"] for q in captured.captured_queries if big_log in q["sql"]]
                assert len(sql) == 1, sql
                with connection.cursor() as cursor:
                    cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql[0]}")
                    plan = cursor.fetchone()[0][0]["Plan"]
                scans = [n for n in _plan_nodes(plan) if n.get("Relation Name") == big_log]
                types = {n["Node Type"] for n in scans}
                read = sum(_rows_read(n) for n in scans)
                where = f"{name} ordering={ordering} {page}"
                if "Seq Scan" in types or not types <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}:
                    failures.append(f"{where}: {types}")
                if read > 1000:
                    failures.append(f"{where}: {read} rows read for a page of 50")
    assert not failures, "\n".join(failures)
