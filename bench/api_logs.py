"""Dispatch log endpoint: GET /api/dispatch/logs over a big log, through a real
gunicorn server.

    python -m bench.api_logs --rows 1000000

Fills (once, reused across runs) the dispatch log with ``--rows`` records in
SQL: rounds of ``--round-size`` vehicles (of ``--vehicles``) every 15
minutes, every record of a round at the same time as the real log writes
them, signal types in turn. Then times, for each filter combination, the
first page and a page deep in the results (a cursor 90 % of the way through,
as a client walking the pages would reach it), p50/p95 over ``--repeat``
requests, plus the same deep page read with OFFSET in SQL alone, for
comparison. Uses PostgreSQL (default postgres://v2g:v2g@127.0.0.1:5432/v2g_bench).
Writes bench/results/api_logs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

from bench.dispatch_fanout import RESULTS, percentile
from bench.http import django_setup, gunicorn, session_cookie, time_get

T0 = datetime(2026, 1, 5, tzinfo=UTC)
TYPES = ("FCR", "aFRR", "mFRR", "MA", "NEBEF", "EcoWatt")


def _fill(rows: int, vehicles: int, round_size: int) -> None:
    from django.db import connection

    from dispatch.models import DispatchLogEntry

    table = DispatchLogEntry._meta.db_table
    last_at = T0 + timedelta(minutes=15 * ((rows - 1) // round_size))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), max(at), count(DISTINCT vehicle_id) FROM {table}")
        if cursor.fetchone() == (rows, last_at, min(vehicles, rows)):
            return  # this run's shape already
        print(f"generating {rows:,} dispatch log records ...", flush=True)
        begin = time.perf_counter()
        # The bench database's own log (other benchmarks' runs) goes: the counts must be ours.
        cursor.execute(f"TRUNCATE {table}")
        # Round r = g / round_size at T0 + r * 15 min; its vehicles are a stride
        # through the fleet, shifted each round so that every vehicle takes part
        # in round_size / vehicles of the rounds.
        cursor.execute(
            f"""
            INSERT INTO {table} (at, command_id, dispatch_id, signal_id, signal_type, target_kw, vehicle_id,
                                 allocated_kw, setpoint_kw, status, acknowledged, ack_latency_s,
                                 fallback_round, score)
            SELECT %(t0)s::timestamptz + (g / %(size)s) * interval '15 minutes',
                   md5('c' || g)::uuid, md5('d' || g / %(size)s)::uuid, md5('s' || g / %(size)s)::uuid,
                   (%(types)s::text[])[1 + (g / %(size)s) %% 6], 5000.0,
                   'lb' || lpad((((g %% %(size)s) + (g / %(size)s) * 7) %% %(vehicles)s)::text, 6, '0'),
                   5.0, 5.0,
                   CASE WHEN g %% 20 = 0 THEN 'timed_out' ELSE 'acked' END, g %% 20 <> 0,
                   CASE WHEN g %% 20 = 0 THEN NULL ELSE 0.02 + (g %% 97) / 1000.0 END,
                   (g / %(size)s) %% 3 / 2, 0.5 + (g %% 50) / 100.0
            FROM generate_series(0, %(rows)s - 1) AS g
            """,
            {"t0": T0, "size": round_size, "types": list(TYPES), "vehicles": vehicles, "rows": rows},
        )
        print(f"generated in {time.perf_counter() - begin:.1f} s", flush=True)


def _combinations(rows: int, round_size: int) -> dict[str, dict]:
    rounds = rows // round_size
    day = T0 + timedelta(minutes=15 * rounds // 2)
    start, end = day.isoformat(), (day + timedelta(days=1)).isoformat()
    dispatch = _dispatch_id(rounds // 3)
    return {
        "none": {},
        "start+end (one day)": {"start": start, "end": end},
        "vehicle_id": {"vehicle_id": "lb000042"},
        "signal_type": {"signal_type": "aFRR"},
        "dispatch_id": {"dispatch_id": dispatch},
        "vehicle_id+signal_type": {"vehicle_id": "lb000042", "signal_type": "aFRR"},
        "signal_type+start+end": {"signal_type": "aFRR", "start": start, "end": end},
        "vehicle_id+start+end": {"vehicle_id": "lb000042", "start": start, "end": end},
        "all four": {"vehicle_id": "lb000042", "signal_type": "aFRR", "start": start, "end": end},
    }


def _dispatch_id(round_number: int) -> str:
    import hashlib
    import uuid

    return str(uuid.UUID(hashlib.md5(f"d{round_number}".encode()).hexdigest()))


def _deep_cursor(params: dict, share: float) -> tuple[str | None, int]:
    """The cursor a client reaches ``share`` of the way through the results,
    and how many results there are."""
    from dispatch.api import DispatchLogPagination
    from dispatch.filters import DispatchLogFilter
    from dispatch.models import DispatchLogEntry

    queryset = DispatchLogFilter(params, queryset=DispatchLogEntry.objects.all()).qs
    count = queryset.count()
    if count < 200:
        return None, count
    row = queryset.order_by("-at", "-id").values("at", "id")[int(count * share)]
    return DispatchLogPagination().encode_position([row["at"].isoformat(), row["id"]]), count


def _offset_sql_ms(depth: int, repeat: int) -> dict:
    """The deep page by LIMIT/OFFSET (what LimitOffsetPagination runs), SQL alone."""
    from django.db import connection

    from dispatch.models import DispatchLogEntry

    sql = str(DispatchLogEntry.objects.order_by("-at", "-id")[depth : depth + 100].query)
    ms = []
    with connection.cursor() as cursor:
        for _ in range(repeat):
            begin = time.perf_counter()
            cursor.execute(sql)
            cursor.fetchall()
            ms.append((time.perf_counter() - begin) * 1000)
    return {
        "offset": depth,
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="GET /api/dispatch/logs over a big dispatch log.")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--vehicles", type=int, default=2_000)
    parser.add_argument("--round-size", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default="postgres://v2g:v2g@127.0.0.1:5432/v2g_bench")
    args = parser.parse_args()

    env = django_setup(args.database_url, "logs", K_LOGGING__BACKEND="sqlite")
    from django.db import connection

    begin = time.perf_counter()
    _fill(args.rows, args.vehicles, args.round_size)
    with connection.cursor() as cursor:  # as autovacuum would after a bulk load
        cursor.execute("VACUUM ANALYZE dispatch_dispatchlogentry")
    print(f"log ready in {time.perf_counter() - begin:.1f} s", flush=True)

    combinations = _combinations(args.rows, args.round_size)
    deep = {name: _deep_cursor(params, 0.9) for name, params in combinations.items()}
    offset = _offset_sql_ms(int(args.rows * 0.9), max(5, args.repeat // 3))
    connection.close()

    cookie = session_cookie()
    runs: dict[str, dict] = {}
    with gunicorn(env) as server:
        base = f"{server}/api/dispatch/logs"
        time_get(base, cookie, 4)  # warm both workers
        for name, params in combinations.items():
            query = urllib.parse.urlencode(params)
            cursor, count = deep[name]
            runs[name] = {
                "matching": count,
                "first page": time_get(f"{base}?{query}", cookie, args.repeat),
            }
            if cursor:
                runs[name]["deep page (90 %)"] = time_get(
                    f"{base}?{urllib.parse.urlencode({**params, 'cursor': cursor})}", cookie, args.repeat
                )
        runs["none"]["first page, page_size=1000"] = time_get(f"{base}?page_size=1000", cookie, args.repeat)
        cursor, _ = deep["none"]
        runs["none"]["deep page (90 %), page_size=1000"] = time_get(
            f"{base}?{urllib.parse.urlencode({'cursor': cursor, 'page_size': 1000})}", cookie, args.repeat
        )

    result = {
        "benchmark": "api_logs",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": args.rows,
        "vehicles": args.vehicles,
        "round_size": args.round_size,
        "requests": runs,
        "offset_sql_same_deep_page": offset,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "api_logs.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"\nGET /api/dispatch/logs, {args.rows:,} records (rounds of {args.round_size:,} of "
        f"{args.vehicles:,} vehicles), gunicorn 2 workers, PostgreSQL, 100 per page unless said"
    )
    print(f"{'filters':<24} {'matching':>9} {'page':<34} {'rows':>5} {'p50 ms':>7} {'p95 ms':>7} {'KB':>6}")
    for name, run in runs.items():
        for page, row in run.items():
            if page == "matching":
                continue
            print(
                f"{name:<24} {run['matching']:>9,} {page:<34} {row['rows']:>5} {row['p50_ms']:>7}"
                f" {row['p95_ms']:>7} {row['bytes'] / 1024:>6.0f}"
            )
    print(
        f"same deep page by OFFSET {offset['offset']:,} in SQL alone (no filter): "
        f"p50 {offset['p50_ms']} ms, p95 {offset['p95_ms']} ms"
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
