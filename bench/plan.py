"""Day-ahead planner: generate_plan over N vehicles x 96 quarter-hours.

    python -m bench.plan --vehicles 1000 10000 [--seed 1] [--time-limit 120]

Pure domain code, no database. A realistic fleet (seeded): commuters plugged
in from the evening (17:00-21:00) to the morning (06:00-09:00), with a
departure target for the morning and one for the next day at midnight; a
share plugged at work (08:00-18:00) instead; batteries 40-82 kWh, chargers
7.4-22 kW, a fifth not V2G capable, start SoCs spread 0.25-0.95. The fleet
target: discharge at the morning and evening peaks, charging at night and
at midday. Times ``generate_plan`` and checks every plan with ``plan_check``.
Writes bench/results/plan.json. ``--scattered``: a stress case where each
vehicle has one window anywhere in the day (no two alike), against the same
target (bench/results/plan_scattered.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from datetime import UTC, date, datetime
from pathlib import Path

from scheduler.domain import PlanInput, PlanVehicle, day_slots, generate_plan, plan_check

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
DAY = date(2025, 6, 3)  # an ordinary Tuesday: 96 quarter-hours


def fleet(n: int, seed: int, scattered: bool = False) -> tuple[PlanVehicle, ...]:
    rng = random.Random(seed)
    vehicles = []
    for i in range(n):
        battery = rng.choice([40.0, 52.0, 60.0, 64.0, 77.0, 82.0])
        charge = rng.choice([7.4, 7.4, 11.0, 11.0, 22.0])
        discharge = 0.0 if rng.random() < 0.2 else min(charge, rng.choice([7.4, 11.0]))
        if scattered:  # a stress case: one window anywhere in the day, nobody alike
            arrive = rng.randrange(0, 60)
            leave = rng.randrange(arrive + 8, 97)
            windows = ((arrive, leave),)
            targets = ((leave, 0.8),) if leave < 96 else ((96, 0.6),)
        elif rng.random() < 0.15:  # plugged at work
            arrive, leave = rng.randint(30, 40), rng.randint(64, 76)
            windows = ((arrive, leave),)
            targets = ((leave, rng.choice([0.6, 0.7, 0.8])),)
        else:  # plugged at home overnight: the end of last night and the start of tonight
            leave, arrive = rng.randint(24, 36), rng.randint(68, 84)
            windows = ((0, leave), (arrive, 96))
            targets = ((leave, rng.choice([0.7, 0.8, 0.8, 0.9])), (96, 0.5))
        vehicles.append(
            PlanVehicle(
                vehicle_id=f"ev-{i:05d}",
                battery_kwh=battery,
                max_charge_kw=charge,
                max_discharge_kw=discharge,
                min_soc=rng.choice([0.2, 0.3, 0.3]),
                soc_start=round(rng.uniform(0.25, 0.95), 3),
                windows=windows,
                departure_targets=targets,
            )
        )
    return tuple(vehicles)


def target(n: int) -> tuple[float, ...]:
    """kW per quarter-hour, scaled to the fleet: + = to the grid."""
    per_vehicle = [0.0] * 96
    for t in range(96):
        hour = t / 4
        if 1 <= hour < 5:
            per_vehicle[t] = -3.0  # night charging
        elif 7 <= hour < 8.5:
            per_vehicle[t] = 1.5  # morning peak
        elif 11 <= hour < 15:
            per_vehicle[t] = -0.5  # midday solar
        elif 18 <= hour < 21:
            per_vehicle[t] = 2.5  # evening peak
    return tuple(round(kw * n, 1) for kw in per_vehicle)


def run(n: int, seed: int, time_limit_s: float | None, scattered: bool) -> dict:
    slots = day_slots(DAY, "Europe/Paris", 15)
    inp = PlanInput(
        slot_starts=slots, slot_minutes=15, target_kw=target(n), vehicles=fleet(n, seed, scattered)
    )
    begin = time.perf_counter()
    result = generate_plan(inp, time_limit_s=time_limit_s)
    wall_s = time.perf_counter() - begin
    begin = time.perf_counter()
    problems = plan_check(inp, result)
    check_s = time.perf_counter() - begin
    h = 0.25
    target_kwh = sum(abs(t) for t in inp.target_kw) * h
    shortfall_kwh = sum(result.shortfall_kw) * h
    return {
        "vehicles": n,
        "slots": len(slots),
        "classes": result.classes,
        "status": result.status,
        "wall_s": round(wall_s, 2),
        "solve_s": round(result.solve_s, 2),
        "gap": result.gap,
        "objective": round(result.objective, 2),
        "lower_bound": None if result.lower_bound is None else round(result.lower_bound, 2),
        "entries": len(result.entries),
        "target_kwh": round(target_kwh, 1),
        "shortfall_kwh": round(shortfall_kwh, 1),
        "shortfall_slots": sum(1 for s in result.shortfall_kw if s > 1e-6),
        "max_shortfall_kw": round(max(result.shortfall_kw), 1),
        "check_s": round(check_s, 2),
        "violations": len(problems),
        "first_violations": problems[:5],
        "messages": len(result.messages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Day-ahead planner over a large fleet.")
    parser.add_argument("--vehicles", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds, passed to generate_plan")
    parser.add_argument(
        "--scattered", action="store_true", help="stress case: one random window a vehicle, the same target"
    )
    args = parser.parse_args()
    runs = []
    for n in args.vehicles:
        row = run(n, args.seed, args.time_limit, args.scattered)
        runs.append(row)
        print(f"{n:,} vehicles: {row['status']} in {row['wall_s']} s", flush=True)
    result = {
        "benchmark": "plan",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seed": args.seed,
        "windows": "scattered" if args.scattered else "commuter",
        "runs": runs,
        "target_s": {"1000": 10, "10000": 60},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("plan_scattered.json" if args.scattered else "plan.json")
    out.write_text(json.dumps(result, indent=2))
    windows = "scattered windows" if args.scattered else "commuter windows"
    print(f"\ngenerate_plan, {DAY} (96 quarter-hours), {windows}, seed {args.seed}")
    print(
        f"{'vehicles':>8} {'classes':>7} {'status':>8} {'time s':>7} {'gap':>9} {'target kWh':>11}"
        f" {'shortfall kWh':>13} {'short slots':>11} {'violations':>10} {'check s':>7}"
    )
    for row in runs:
        gap = "-" if row["gap"] is None else f"{row['gap']:.2e}"
        print(
            f"{row['vehicles']:>8,} {row['classes']:>7,} {row['status']:>8} {row['wall_s']:>7} {gap:>9}"
            f" {row['target_kwh']:>11,.0f} {row['shortfall_kwh']:>13,.1f} {row['shortfall_slots']:>11}"
            f" {row['violations']:>10} {row['check_s']:>7}"
        )
    print(f"written {out}")


if __name__ == "__main__":
    main()
