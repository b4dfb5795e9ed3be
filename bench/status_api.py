"""Vehicle status endpoint: GET /api/vehicles/status over a fleet of N vehicles,
through a real gunicorn server, with learned plug-in profiles.

    python -m bench.status_api --vehicles 10000

Builds (once, reused across runs) a fleet of N vehicles with latest states,
``--history-days`` of quarter-hourly history generated in SQL (a commuter
pattern shifted per vehicle) and a dispatch whose commands hold a fifth of the
fleet; times the nightly profile learning; then times the endpoint for the
whole fleet in one response (``?limit=N``) and for pages of 100. Uses
PostgreSQL (DATABASE_URL, default postgres://v2g:v2g@127.0.0.1:5432/v2g_bench).
Writes bench/results/status_api.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime, timedelta

from bench.dispatch_fanout import RESULTS
from bench.http import django_setup, gunicorn, session_cookie, time_get


def _fleet(n: int, history_days: int) -> str:
    from django.db import connection
    from django.utils import timezone

    from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
    from fleet.models import Fleet, Vehicle
    from telemetry.models import VehicleState, VehicleStateHistory

    fleet_id = f"status-{n}"
    fleet, _ = Fleet.objects.get_or_create(id=fleet_id, defaults={"name": f"Status bench {n}"})
    ids = [f"s{n}-{i:06d}" for i in range(n)]
    if Vehicle.objects.filter(fleet=fleet).count() != n:
        Vehicle.objects.filter(fleet=fleet).delete()
        Vehicle.objects.bulk_create(
            [Vehicle(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11,
                     cluster=f"c{i % 10}") for i, vid in enumerate(ids)], batch_size=5000,
        )  # fmt: skip
    now = timezone.now()
    VehicleState.objects.bulk_create(
        [VehicleState(vehicle_id=vid, soc=0.3 + (i % 60) / 100, plugged_in=i % 3 != 0, reported_at=now,
                      received_at=now) for i, vid in enumerate(ids)],
        update_conflicts=True, unique_fields=["vehicle"],
        update_fields=["soc", "plugged_in", "online", "reported_at", "received_at"], batch_size=5000,
    )  # fmt: skip
    expected_rows = n * history_days * 96
    have = VehicleStateHistory.objects.filter(vehicle__fleet=fleet).count()
    if abs(have - expected_rows) > n * 96:  # not this run's shape: regenerate
        print(f"generating {expected_rows:,} history rows ...", flush=True)
        VehicleStateHistory.objects.filter(vehicle__fleet=fleet).delete()
        table = VehicleStateHistory._meta.db_table
        with connection.cursor() as cursor:
            # Plugged 18:00-07:30 local, each vehicle shifted by -2..+2 hours;
            # weekends plugged 10:00-22:00 as well.
            cursor.execute(
                f"""
                INSERT INTO {table} (vehicle_id, soc, plugged_in, power_kw, reported_at, received_at, source)
                SELECT v.id, 0.5,
                  ((h.local_h + (abs(hashtext(v.id)) %% 5) - 2 + 24) %% 24 >= 18
                   OR (h.local_h + (abs(hashtext(v.id)) %% 5) - 2 + 24) %% 24 < 7.5
                   OR (h.dow IN (0, 6) AND h.local_h BETWEEN 10 AND 22)),
                  0.0, h.t, h.t, 'push'
                FROM {Vehicle._meta.db_table} v,
                  (SELECT t,
                          extract(hour FROM t AT TIME ZONE 'Europe/Paris')
                            + extract(minute FROM t AT TIME ZONE 'Europe/Paris') / 60.0 AS local_h,
                          extract(dow FROM t AT TIME ZONE 'Europe/Paris') AS dow
                   FROM generate_series(%s::timestamptz, %s::timestamptz, interval '15 minutes') AS t) h
                WHERE v.fleet_id = %s
                """,
                [now - timedelta(days=history_days), now - timedelta(minutes=1), fleet_id],
            )
            cursor.execute(f"ANALYZE {table}")
    # A dispatch holding a fifth of the fleet: decisions and windows to report.
    Command.objects.filter(vehicle__fleet=fleet).delete()
    signal = FlexibilitySignal.objects.create(
        signal_type="aFRR", power_kw=n, start_at=now, duration_s=3600, valid_until=now + timedelta(hours=1)
    )
    dispatch = Dispatch.objects.create(signal=signal, target_kw=n, status=DispatchStatus.COMPLETED)
    Command.objects.bulk_create(
        [Command(dispatch=dispatch, vehicle_id=vid, power_kw=5, allocated_kw=5, status=CommandStatus.ACKED,
                 valid_until=signal.valid_until) for vid in ids[::5]], batch_size=5000,
    )  # fmt: skip
    with connection.cursor() as cursor:  # as autovacuum would: plans for the real row counts
        for model in (Fleet, Vehicle, VehicleState, Command):
            cursor.execute(f"ANALYZE {model._meta.db_table}")
    return fleet_id


def main() -> None:
    parser = argparse.ArgumentParser(description="GET /api/vehicles/status over a large fleet.")
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--history-days", type=int, default=14)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default="postgres://v2g:v2g@127.0.0.1:5432/v2g_bench")
    args = parser.parse_args()

    env = django_setup(
        args.database_url, "status", K_TELEMETRY__PREDICTION_HISTORY_DAYS=str(args.history_days)
    )
    from telemetry import services

    n = args.vehicles
    begin = time.perf_counter()
    fleet_id = _fleet(n, args.history_days)
    print(f"fleet ready in {time.perf_counter() - begin:.1f} s", flush=True)
    from fleet.models import Vehicle

    fleet_ids = list(Vehicle.objects.filter(fleet_id=fleet_id).order_by("id").values_list("id", flat=True))
    begin = time.perf_counter()
    learned = services.profiles_learn(vehicle_ids=fleet_ids)
    learn_s = time.perf_counter() - begin
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE telemetry_plugprofile")
    print(f"profiles learned: {learned['learned']:,} of {n:,} in {learn_s:.1f} s", flush=True)

    cookie = session_cookie()
    with gunicorn(env) as server:
        base = f"{server}/api/vehicles/status?fleet_id={fleet_id}"
        time_get(f"{base}&limit={n}", cookie, 2)  # warm both workers' imports and caches
        runs = {
            f"whole fleet (limit={n})": time_get(f"{base}&limit={n}", cookie, args.repeat),
            "first page (limit=100)": time_get(f"{base}&limit=100", cookie, args.repeat * 5),
            "last page (limit=100)": time_get(f"{base}&limit=100&offset={n - 100}", cookie, args.repeat * 5),
            "cluster filter (1/10 of the fleet)": time_get(
                f"{base}&cluster=c3&limit={n}", cookie, args.repeat
            ),
        }

    result = {
        "benchmark": "status_api",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "vehicles": n,
        "history_days": args.history_days,
        "history_rows": n * args.history_days * 96,
        "profile_learning_s": round(learn_s, 2),
        "profiles_learned": learned["learned"],
        "requests": runs,
        "target_ms": 300,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "status_api.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nGET /api/vehicles/status, {n:,} vehicles, gunicorn 2 workers, PostgreSQL")
    print(f"{'request':<38} {'rows':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'KB':>7}")
    for name, row in runs.items():
        print(
            f"{name:<38} {row['rows']:>6} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8}"
            f" {row['bytes'] / 1024:>7.0f}"
        )
    print(f"profile learning ({result['history_rows']:,} history rows): {learn_s:.1f} s")
    print(f"written {out}")


if __name__ == "__main__":
    main()
