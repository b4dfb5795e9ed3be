"""Recording vehicle state reported over MQTT (push)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter

from fleet.models import Vehicle
from telemetry.codec import State, state_decode
from telemetry.models import VehicleState
from v2g_project.bridge import Message
from v2g_project.payloads import PayloadError, vehicle_from_topic

log = logging.getLogger(__name__)

STATES = Counter(
    "telemetry_states_total",
    "Vehicle state messages by outcome: recorded, stale, malformed, unknown_vehicle.",
    ["outcome"],
)


def states_record(messages: Sequence[Message], topic_filter: str) -> int:
    """Upsert the latest state of each vehicle in one batch; returns rows written.

    Idempotent: a redelivered or older state (by the vehicle's timestamp) never
    overwrites a newer one. Malformed payloads and unknown vehicles are logged
    with the reason and counted; the rest of the batch is still recorded.
    """
    latest: dict[str, tuple[State, Message]] = {}
    for message in messages:
        try:
            state = state_decode(message.payload, vehicle_from_topic(message.topic, topic_filter))
        except PayloadError as exc:
            STATES.labels("malformed").inc()
            log.warning("rejected state on %s: %s", message.topic, exc)
            continue
        held = latest.get(state.vehicle_id)
        if held is None or state.timestamp >= held[0].timestamp:
            latest[state.vehicle_id] = (state, message)
    if not latest:
        return 0
    known = set(Vehicle.objects.filter(id__in=latest).values_list("id", flat=True))
    for vehicle_id in latest.keys() - known:
        STATES.labels("unknown_vehicle").inc()
        log.warning("state from unknown vehicle %r ignored (register it in the fleet first)", vehicle_id)
    stored = dict(VehicleState.objects.filter(vehicle_id__in=known).values_list("vehicle_id", "reported_at"))
    rows = []
    for vehicle_id in known:
        state, message = latest[vehicle_id]
        if vehicle_id in stored and stored[vehicle_id] > state.timestamp:
            STATES.labels("stale").inc()
            continue
        rows.append(
            VehicleState(
                vehicle_id=vehicle_id, soc=state.soc, plugged_in=state.plugged_in, power_kw=state.power_kw,
                online=True, reported_at=state.timestamp, received_at=message.received_at,
            )
        )  # fmt: skip
    VehicleState.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["vehicle"],
        update_fields=["soc", "plugged_in", "power_kw", "online", "reported_at", "received_at"],
        batch_size=1000,
    )
    STATES.labels("recorded").inc(len(rows))
    return len(rows)
