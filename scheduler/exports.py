"""Plan exports (SPEC §8): CSV and JSON, byte-for-byte stable.

CSV: the header line ``vehicle_id,timeslot,power_kw``, then one line per
entry, in slot order then vehicle id order (by code point, whatever the
database's collation), ``\\n`` line ends; ``timeslot`` is the slot start in ISO
8601 with the local offset of the plan's zone (``2025-10-26T02:00:00+02:00``,
then ``...+01:00`` for the repeated hour), ``power_kw`` has exactly three
decimals (whole watts; + = to the grid).

JSON: the plan's metadata, ``slots`` (per slot: target, planned and shortfall
kW and ``planned_mw``, the RTE-facing aggregate in MW) and ``entries`` as in
the CSV. Keys in a fixed order, compact separators, a final newline.

Both are generated in chunks, so a million-entry plan streams.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from scheduler.models import Plan, PlanEntry
from scheduler.selectors import slot_labels

CSV_HEADER = "vehicle_id,timeslot,power_kw\n"
CHUNK_ROWS = 10_000


def power_text(kw: float) -> str:
    """Three decimals, never ``-0.000``."""
    text = f"{kw:.3f}"
    return "0.000" if text == "-0.000" else text


def _entries(plan: Plan) -> Iterator[tuple[str, int, float]]:
    """(vehicle_id, slot, power_kw) in slot order, then vehicle id by code point."""
    rows = (
        PlanEntry.objects.filter(plan=plan)
        .order_by("slot", "vehicle_id")
        .values_list("vehicle_id", "slot", "power_kw")
        .iterator(chunk_size=CHUNK_ROWS)
    )
    group: list[tuple[str, int, float]] = []
    for row in rows:
        if group and row[1] != group[0][1]:
            yield from sorted(group)
            group = []
        group.append(row)
    yield from sorted(group)


def _chunked(lines: Iterator[str]) -> Iterator[bytes]:
    buffer: list[str] = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= CHUNK_ROWS:
            yield "".join(buffer).encode()
            buffer = []
    if buffer:
        yield "".join(buffer).encode()


def plan_csv_chunks(plan: Plan) -> Iterator[bytes]:
    labels = slot_labels(plan)
    yield CSV_HEADER.encode()
    yield from _chunked(f"{vid},{labels[slot]},{power_text(kw)}\n" for vid, slot, kw in _entries(plan))


def plan_csv(plan: Plan) -> bytes:
    return b"".join(plan_csv_chunks(plan))


def plan_metadata(plan: Plan) -> dict:
    """Everything but the entries, in the export's key order."""
    labels = slot_labels(plan)
    return {
        "plan_id": str(plan.id),
        "day": plan.day.isoformat(),
        "version": plan.version,
        "status": plan.status,
        "fleet_id": plan.fleet_id,
        "time_zone": plan.time_zone,
        "slot_minutes": plan.slot_minutes,
        "slot_count": plan.slot_count,
        "created_at": plan.created_at.isoformat(),
        "decided_at": plan.decided_at.isoformat() if plan.decided_at else None,
        "decided_by": plan.decided_by.get_username() if plan.decided_by_id else None,
        "inputs_digest": plan.inputs_digest,
        "solver": {
            "status": plan.solver_status,
            "objective": plan.objective,
            "gap": plan.gap,
            "solve_s": plan.solve_s,
        },
        "messages": list(plan.messages),
        "totals": {
            "target_kwh": plan.target_kwh,
            "planned_kwh": plan.planned_kwh,
            "shortfall_kwh": plan.shortfall_kwh,
            "vehicles": plan.vehicle_count,
            "entries": plan.entry_count,
        },
        "slots": [
            {
                "slot": k,
                "timeslot": label,
                "target_kw": plan.target_kw[k],
                "planned_kw": plan.planned_kw[k],
                "shortfall_kw": plan.shortfall_kw[k],
                "planned_mw": round(plan.planned_kw[k] / 1000, 6) + 0.0,
            }
            for k, label in enumerate(labels)
        ],
    }


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def plan_json_chunks(plan: Plan) -> Iterator[bytes]:
    labels = slot_labels(plan)
    head = _dumps(plan_metadata(plan))
    yield (head[:-1] + ',"entries":[').encode()
    first = True

    def lines() -> Iterator[str]:
        nonlocal first
        for vid, slot, kw in _entries(plan):
            sep = "" if first else ","
            first = False
            yield (
                f'{sep}{{"vehicle_id":{_dumps(vid)},"slot":{slot},'
                f'"timeslot":"{labels[slot]}","power_kw":{power_text(kw)}}}'
            )

    yield from _chunked(lines())
    yield b"]}\n"


def plan_json(plan: Plan) -> bytes:
    return b"".join(plan_json_chunks(plan))


def export_filename(plan: Plan, extension: str) -> str:
    return f"plan-{plan.day.isoformat()}-v{plan.version}.{extension}"
