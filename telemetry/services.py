"""Recording vehicle state (push, pull answers, discovery answers, Last Will),
pull rounds, discovery broadcasts and the history purge."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from fleet.models import ID_VALIDATOR, Fleet, Vehicle
from telemetry import prediction
from telemetry.codec import (
    State,
    capabilities_decode,
    request_encode,
    request_id_decode,
    state_decode,
    will_decode,
)
from telemetry.metrics import DISCOVERED, OFFLINE, POLL_TIMEOUTS, POLLS, STATES
from telemetry.models import (
    PlugProfile,
    PollStatus,
    StateSource,
    TelemetryPoll,
    TelemetryPollMiss,
    VehicleState,
    VehicleStateHistory,
)
from v2g_project import mqtt
from v2g_project.bridge import Message
from v2g_project.payloads import PayloadError, vehicle_from_topic

log = logging.getLogger(__name__)


# Answers are written by the bridge in batches a few milliseconds after they
# arrive: a round is closed this long after its deadline so that answers
# received in time are in the database when it is counted.
POLL_FINISH_GRACE_S = 1.0
PURGE_CHUNK = 10_000


# --- recording states -------------------------------------------------------------


def states_record(messages: Sequence[Message], topic_filter: str, *, source: str = StateSource.PUSH) -> int:
    """Record a batch of states: every state into the history, the newest of each
    vehicle into its latest state; returns the latest-state rows written.

    Idempotent: the history holds one row per (vehicle, reported_at), so a
    redelivery adds nothing, and a redelivered or older state never overwrites
    a newer latest state. Pull answers are tied to their round by the
    ``request_id`` they echo (an unknown or missing one is still recorded).
    Malformed payloads and unknown vehicles are logged with the reason and
    counted; the rest of the batch is still recorded.
    """
    decoded: list[tuple[State, Message]] = []
    for message in messages:
        try:
            state = state_decode(message.payload, vehicle_from_topic(message.topic, topic_filter))
        except PayloadError as exc:
            STATES.labels("malformed").inc()
            log.warning("rejected state on %s: %s", message.topic, exc)
            continue
        decoded.append((state, message))
    if not decoded:
        return 0
    latest: dict[str, tuple[State, Message]] = {}
    for state, message in decoded:
        held = latest.get(state.vehicle_id)
        if held is None or state.timestamp >= held[0].timestamp:
            latest[state.vehicle_id] = (state, message)
    known = _known_vehicles(list(latest))
    for vehicle_id in latest.keys() - known:
        STATES.labels("unknown_vehicle").inc()
        log.warning(
            "state from unknown vehicle %r ignored (register it in the fleet first)", vehicle_id,
            extra={"vehicle_id": vehicle_id},
        )  # fmt: skip
    polls = _polls_known(decoded) if source == StateSource.PULL else {}
    history: dict[tuple[str, datetime], VehicleStateHistory] = {}
    for state, message in decoded:
        if state.vehicle_id in known:
            history.setdefault(
                (state.vehicle_id, state.timestamp),
                VehicleStateHistory(
                    vehicle_id=state.vehicle_id, soc=state.soc, plugged_in=state.plugged_in,
                    power_kw=state.power_kw, reported_at=state.timestamp, received_at=message.received_at,
                    source=source, poll_id=polls.get(request_id_decode(message.payload)),
                ),
            )  # fmt: skip
    if connection.vendor == "postgresql":
        written = _states_write_postgresql(history.values(), [latest[v] for v in known])
        STATES.labels("stale").inc(len(known) - written)
        STATES.labels("recorded").inc(written)
        return written
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
                departure_at=state.departure_at,
            )
        )  # fmt: skip
    with transaction.atomic():
        VehicleStateHistory.objects.bulk_create(history.values(), ignore_conflicts=True, batch_size=1000)
        VehicleState.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["vehicle"],
            update_fields=[
                "soc",
                "plugged_in",
                "power_kw",
                "online",
                "reported_at",
                "received_at",
                "departure_at",
            ],
            batch_size=1000,
        )
    STATES.labels("recorded").inc(len(rows))
    return len(rows)


def _known_vehicles(vehicle_ids: list[str]) -> set[str]:
    if connection.vendor == "postgresql":  # one array parameter, not one per id
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {Vehicle._meta.db_table} WHERE id = ANY(%s)", [vehicle_ids])  # noqa: S608
            return {row[0] for row in cursor.fetchall()}
    return set(Vehicle.objects.filter(id__in=vehicle_ids).values_list("id", flat=True))


def _states_write_postgresql(
    history: Iterable[VehicleStateHistory], latest: list[tuple[State, Message]]
) -> int:
    """History and latest states in two statements of array parameters.

    Building 10,000 model instances and their INSERTs was most of the bridge's
    ingest time. The upsert keeps the newest state by its own WHERE, so no read
    of the stored timestamps is needed; it returns how many rows it wrote.
    """
    history = list(history)
    hist_table, state_table = VehicleStateHistory._meta.db_table, VehicleState._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        if history:
            cursor.execute(
                f"INSERT INTO {hist_table} "  # noqa: S608 - our table names; values are parameters
                "(vehicle_id, soc, plugged_in, power_kw, reported_at, received_at, source, poll_id) "
                "SELECT v, s, p, w, to_timestamp(r), to_timestamp(c), src, poll FROM unnest("
                "%s::text[], %s::float8[], %s::bool[], %s::float8[], %s::float8[], %s::float8[], %s::text[], "
                "%s::uuid[]) AS t(v, s, p, w, r, c, src, poll) "
                "ON CONFLICT (vehicle_id, reported_at) DO NOTHING",
                [
                    [h.vehicle_id for h in history], [h.soc for h in history],
                    [h.plugged_in for h in history],
                    [h.power_kw for h in history], [h.reported_at.timestamp() for h in history],
                    [h.received_at.timestamp() for h in history], [h.source for h in history],
                    [str(h.poll_id) if h.poll_id else None for h in history],
                ],
            )  # fmt: skip
        if not latest:
            return 0
        cursor.execute(
            f"INSERT INTO {state_table} AS cur "  # noqa: S608 - our table names; values are parameters
            "(vehicle_id, soc, plugged_in, power_kw, online, reported_at, received_at, departure_at) "
            "SELECT v, s, p, w, true, to_timestamp(r), to_timestamp(c), to_timestamp(d) FROM unnest("
            "%s::text[], %s::float8[], %s::bool[], %s::float8[], %s::float8[], %s::float8[], %s::float8[]) "
            "AS t(v, s, p, w, r, c, d) "
            "ON CONFLICT (vehicle_id) DO UPDATE SET soc = EXCLUDED.soc, plugged_in = EXCLUDED.plugged_in, "
            "power_kw = EXCLUDED.power_kw, online = true, reported_at = EXCLUDED.reported_at, "
            "received_at = EXCLUDED.received_at, departure_at = EXCLUDED.departure_at "
            "WHERE cur.reported_at <= EXCLUDED.reported_at "
            "RETURNING cur.vehicle_id",
            [
                [st.vehicle_id for st, _m in latest], [st.soc for st, _m in latest],
                [st.plugged_in for st, _m in latest], [st.power_kw for st, _m in latest],
                [st.timestamp.timestamp() for st, _m in latest],
                [m.received_at.timestamp() for _s, m in latest],
                [st.departure_at.timestamp() if st.departure_at else None for st, _m in latest],
            ],
        )  # fmt: skip
        return len(cursor.fetchall())


def _polls_known(decoded: Sequence[tuple[State, Message]]) -> dict[uuid.UUID, uuid.UUID]:
    ids = {request_id_decode(message.payload) for _, message in decoded} - {None}
    if not ids:
        return {}
    return {
        poll_id: poll_id for poll_id in TelemetryPoll.objects.filter(id__in=ids).values_list("id", flat=True)
    }


def pull_answers_record(messages: Sequence[Message], topic_filter: str) -> int:
    """Answers to pull rounds (``response_topic_prefix/<vehicle_id>``)."""
    return states_record(messages, topic_filter, source=StateSource.PULL)


def vehicles_offline_record(messages: Sequence[Message], topic_filter: str) -> int:
    """A vehicle's or gateway's Last Will: mark the vehicle(s) offline at once, so
    dispatch stops choosing them; their next state sets them online again.
    Returns the vehicles marked offline.

    The vehicle is the payload's ``vehicle_id`` (or each of a gateway's
    ``vehicle_ids``), else the topic's last level. A birth message on the same
    topic (``"online": true`` or ``"status": "online"``) is not a will and
    changes nothing.

    Which vehicles a will marks offline:

    - a live will (the broker publishes it as the connection drops): those not
      heard from after it arrived (by ``received_at``). Its ``timestamp`` is
      not used: a will is fixed at CONNECT, so it can only carry a time before
      the loss, and dating it so would ignore every will.
    - a retained will (MQTT retain flag): the broker replays it on every
      subscription, so at each bridge start or reconnect, however old it is;
      its arrival says nothing of when the connection was lost. It is dated by
      its ``timestamp`` (when it was set, at the latest the start of the
      connection it belongs to) and marks offline only vehicles whose latest
      state was reported before it: nothing heard from them since that
      connection began. A vehicle that reported after it is left online,
      because it may have come back since (reconnected, or reporting over
      another link); had it died later on that same connection, it goes stale
      after ``stale_after_seconds`` anyway. Both times are the vehicle's (or
      its gateway's) own clock. A retained will without a readable
      ``timestamp`` is ignored: its age is unknown.
    """
    live: dict[str, datetime] = {}
    retained: dict[str, datetime] = {}
    for message in messages:
        try:
            will = will_decode(message.payload, vehicle_from_topic(message.topic, topic_filter))
        except PayloadError as exc:
            log.warning("Last Will on %s ignored: %s", message.topic, exc)
            continue
        if will.online:
            log.debug("birth message on %s (not a will): %d vehicle(s)", message.topic, len(will.vehicle_ids))
            continue
        if not message.retain:
            for vehicle_id in will.vehicle_ids:
                live[vehicle_id] = max(live.get(vehicle_id, message.received_at), message.received_at)
        elif will.timestamp is None:
            log.info("retained Last Will on %s has no readable timestamp: ignored", message.topic)
        else:
            for vehicle_id in will.vehicle_ids:
                retained[vehicle_id] = max(retained.get(vehicle_id, will.timestamp), will.timestamp)
    marked = 0
    if live:
        at = max(live.values())
        marked = VehicleState.objects.filter(vehicle_id__in=live, online=True, received_at__lte=at).update(
            online=False
        )
        log.info("Last Will: %d vehicle(s) marked offline (%s)", marked, ", ".join(sorted(live)[:10]))
    if retained:
        by_time: dict[datetime, list[str]] = {}
        for vehicle_id, at in retained.items():
            by_time.setdefault(at, []).append(vehicle_id)
        groups = list(by_time.items())
        from_retained = 0
        for begin in range(0, len(groups), 100):  # bounded OR chains (SQLite limits expression depth)
            condition = Q()
            for at, vehicle_ids in groups[begin : begin + 100]:
                condition |= Q(vehicle_id__in=vehicle_ids, reported_at__lt=at)
            from_retained += VehicleState.objects.filter(condition, online=True).update(online=False)
        marked += from_retained
        log.info(
            "retained Last Will: %d of %d vehicle(s) marked offline, the others reported since (%s)",
            *(from_retained, len(retained), ", ".join(sorted(retained)[:10])),
        )
    OFFLINE.inc(marked)
    return marked


# --- discovery ------------------------------------------------------------------------


def discovery_record(
    messages: Sequence[Message], topic_filter: str, *, auto_register: bool, fleet_id: str
) -> int:
    """Discovery answers (``discovery_response_prefix/<vehicle_id>``): refresh the
    state of known vehicles; unknown ones are registered into ``fleet_id`` with
    the capabilities they announce when ``auto_register`` is on, else counted
    and logged (by states_record) as unknown vehicles."""
    if auto_register:
        vehicles_register_discovered(messages, topic_filter, fleet_id=fleet_id)
    return states_record(messages, topic_filter, source=StateSource.DISCOVERY)


def vehicles_register_discovered(messages: Sequence[Message], topic_filter: str, *, fleet_id: str) -> int:
    """Register the unknown vehicles of a batch of discovery answers; returns how
    many. Idempotent (a vehicle registered meanwhile is left as it is)."""
    candidates: dict[str, Vehicle] = {}
    for message in messages:
        try:
            state = state_decode(message.payload, vehicle_from_topic(message.topic, topic_filter))
            ID_VALIDATOR(state.vehicle_id)
            caps = capabilities_decode(message.payload)
        except PayloadError as exc:
            log.warning("discovery answer on %s not registered: %s", message.topic, exc)
            continue
        except ValidationError:  # from the id validator: the id appears in MQTT topics
            log.warning("discovery answer on %s not registered: invalid vehicle id", message.topic)
            continue
        candidates[state.vehicle_id] = Vehicle(
            id=state.vehicle_id, fleet_id=fleet_id, battery_kwh=caps.battery_kwh,
            max_charge_kw=caps.max_charge_kw, max_discharge_kw=caps.max_discharge_kw, is_v2g=caps.is_v2g,
            min_soc=caps.min_soc, target_soc=caps.target_soc,
        )  # fmt: skip
    if not candidates:
        return 0
    known = set(Vehicle.objects.filter(id__in=candidates).values_list("id", flat=True))
    new = [vehicle for vid, vehicle in candidates.items() if vid not in known]
    if not new:
        return 0
    with transaction.atomic():
        Fleet.objects.get_or_create(id=fleet_id, defaults={"name": "Discovered vehicles"})
        Vehicle.objects.bulk_create(new, ignore_conflicts=True)
    DISCOVERED.inc(len(new))
    log.info("discovery registered %d vehicle(s) into fleet %r", len(new), fleet_id)
    return len(new)


def discovery_broadcast(*, now: datetime | None = None) -> uuid.UUID:
    """Ask every vehicle to announce itself; answers come through the bridge."""
    cfg = settings.V2G
    request_id = uuid.uuid4()
    payload = request_encode(request_id, now or timezone.now())
    mqtt.publish_wait(
        mqtt.publisher(),
        cfg.telemetry.discovery_topic,
        payload,
        cfg.mqtt.qos.telemetry,
        cfg.mqtt.connect_timeout_s,
    )
    log.info("discovery broadcast %s on %s", request_id, cfg.telemetry.discovery_topic)
    return request_id


# --- pull rounds ------------------------------------------------------------------------


@dataclass(frozen=True)
class PollStart:
    outcome: str  # started, skipped (mode), refused (a round overlaps), failed (not published)
    poll_id: uuid.UUID | None = None
    wait_s: float = 0.0


def poll_slot(now: datetime, interval_s: int) -> datetime:
    """The Beat slot of ``now``: two Beats (or a redelivered task) firing for the
    same period get the same slot, and the unique round_at refuses the second."""
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_s, UTC)


def poll_start(
    *, force: bool = False, timeout_s: float | None = None, now: datetime | None = None
) -> PollStart:
    """Open a pull round and broadcast its request.

    The mode is read now, not when the schedule was made, so switching
    ``telemetry.mode`` needs no migration: in push mode (or with telemetry
    disabled) the Beat round does nothing. ``force`` runs a manual round in any
    mode, with an optional shorter ``timeout_s``.
    """
    cfg = settings.V2G
    if not force and (not cfg.telemetry.enabled or cfg.telemetry.mode == "push"):
        return PollStart("skipped")
    now = now or timezone.now()
    polls_finish_overdue(now=now)  # a round whose finishing task was lost must not block this one
    timeout_s = timeout_s or cfg.telemetry.timeout_seconds
    try:
        with transaction.atomic():
            poll = TelemetryPoll.objects.create(
                round_at=now if force else poll_slot(now, cfg.telemetry.interval_seconds),
                manual=force, started_at=now, deadline_at=now + timedelta(seconds=timeout_s),
                expected=Vehicle.objects.active().count(),
            )  # fmt: skip
    except IntegrityError:
        POLLS.labels("refused").inc()
        log.warning("pull round refused: another round is open or this slot already ran")
        return PollStart("refused")
    try:
        mqtt.publish_wait(
            mqtt.publisher(), cfg.telemetry.request_topic, request_encode(poll.id, now),
            cfg.mqtt.qos.telemetry, cfg.mqtt.connect_timeout_s,
        )  # fmt: skip
    except mqtt.MqttUnavailable as exc:
        # Nobody was asked, so nobody timed out: close the round without misses.
        TelemetryPoll.objects.filter(id=poll.id, status=PollStatus.COLLECTING).update(
            status=PollStatus.FAILED, finished_at=timezone.now(), reason=str(exc)[:300]
        )
        POLLS.labels("failed").inc()
        log.error("pull round %s not published: %s", poll.id, exc)
        return PollStart("failed", poll.id)
    log.info("pull round %s: request sent to %d vehicle(s)", poll.id, poll.expected)
    return PollStart("started", poll.id, timeout_s + POLL_FINISH_GRACE_S)


def poll_finish(poll_id: str | uuid.UUID, *, now: datetime | None = None) -> float | None:
    """Close the round once its deadline has passed: active vehicles with no
    answer received by the deadline are recorded as misses and counted in
    telemetry_poll_timeout_total (exactly once: the status changes under a row
    lock). Returns the seconds to wait when called early, else None."""
    now = now or timezone.now()
    poll = TelemetryPoll.objects.filter(id=poll_id).first()
    if poll is None or poll.status != PollStatus.COLLECTING:
        return None
    close_at = poll.deadline_at + timedelta(seconds=POLL_FINISH_GRACE_S)
    if now < close_at:
        return (close_at - now).total_seconds()
    with transaction.atomic():
        poll = (
            TelemetryPoll.objects.select_for_update().filter(id=poll_id, status=PollStatus.COLLECTING).first()
        )
        if poll is None:
            return None
        answered = set(
            VehicleStateHistory.objects.filter(poll=poll, received_at__lte=poll.deadline_at)
            .values_list("vehicle_id", flat=True)
            .distinct()
        )
        expected = set(
            Vehicle.objects.active().filter(created_at__lte=poll.started_at).values_list("id", flat=True)
        )
        missed = sorted(expected - answered)
        TelemetryPollMiss.objects.bulk_create(
            [TelemetryPollMiss(poll=poll, vehicle_id=vid) for vid in missed],
            ignore_conflicts=True,
            batch_size=1000,
        )
        TelemetryPoll.objects.filter(id=poll.id).update(
            status=PollStatus.FINISHED, finished_at=now, answered=len(answered), timed_out=len(missed)
        )
        transaction.on_commit(lambda: (POLL_TIMEOUTS.inc(len(missed)), POLLS.labels("finished").inc()))
    log.info(
        "pull round %s finished: %d answered, %d timed out%s",
        *(poll.id, len(answered), len(missed), f" ({', '.join(missed[:10])}...)" if missed else ""),
    )
    return None


def polls_finish_overdue(*, now: datetime | None = None) -> int:
    """Finish rounds left open past their deadline (a worker died before the
    finishing task ran); returns how many."""
    now = now or timezone.now()
    overdue = TelemetryPoll.objects.filter(
        status=PollStatus.COLLECTING, deadline_at__lt=now - timedelta(seconds=POLL_FINISH_GRACE_S)
    ).values_list("id", flat=True)
    ids = list(overdue)
    for poll_id in ids:
        poll_finish(poll_id, now=now)
    return len(ids)


# --- retention ---------------------------------------------------------------------------


def history_purge(*, retention_days: int, now: datetime | None = None, chunk_size: int = PURGE_CHUNK) -> int:
    """Delete state history and pull rounds older than ``retention_days``, in
    chunks (each a short transaction, so a large backlog never holds long locks
    or one huge WAL burst). Idempotent; returns the history rows deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=retention_days)
    deleted = 0
    while True:
        ids = list(
            VehicleStateHistory.objects.filter(received_at__lt=cutoff).values_list("id", flat=True)[
                :chunk_size
            ]
        )
        if not ids:
            break
        deleted += VehicleStateHistory.objects.filter(id__in=ids).delete()[0]
    while True:
        ids = list(
            TelemetryPoll.objects.filter(started_at__lt=cutoff)
            .exclude(status=PollStatus.COLLECTING)
            .values_list("id", flat=True)[:100]
        )
        if not ids:
            break
        TelemetryPoll.objects.filter(id__in=ids).delete()
    log.info("telemetry purge: %d history row(s) older than %s deleted", deleted, cutoff.isoformat())
    return deleted


# --- prediction: learned plug-in profiles ----------------------------------------------

PROFILE_CHUNK = 500


def prediction_engine() -> prediction.PredictionEngine:
    """The configured engine, on the local quarter-hours of ``scheduler.time_zone``
    (where drivers live by the clock)."""
    return prediction.engine_for(settings.V2G.telemetry.prediction_engine, settings.V2G.scheduler.time_zone)


def plug_profiles(vehicle_ids: Iterable[str]) -> dict[str, prediction.PlugProfile]:
    """The stored profiles of these vehicles (absent: never learned)."""
    return {
        vehicle_id: prediction.PlugProfile.from_bytes(tz_key, bytes(prob), covered_s)
        for vehicle_id, tz_key, prob, covered_s in PlugProfile.objects.filter(
            vehicle_id__in=list(vehicle_ids)
        ).values_list("vehicle_id", "tz_key", "prob", "covered_s")
    }


def history_quarters(
    vehicle_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per vehicle, its history thinned by the database to one sample per UTC
    quarter-hour: (the quarter-hour's middle in epoch seconds, plugged in at any
    report in it). Two weeks of 1-minute pushes are 1,344 rows per vehicle
    instead of 20,160, and the profile reads quarter-hours anyway."""
    if not vehicle_ids:
        return {}
    table = VehicleStateHistory._meta.db_table
    bounds = [
        connection.ops.adapt_datetimefield_value(since),
        connection.ops.adapt_datetimefield_value(until),
    ]
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT vehicle_id, floor(extract(epoch FROM reported_at) / 900)::bigint, bool_or(plugged_in) "  # noqa: S608 - our table; values are parameters
            f"FROM {table} WHERE vehicle_id = ANY(%s) AND reported_at >= %s AND reported_at <= %s "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        params = [list(vehicle_ids), *bounds]
    else:
        marks = ", ".join(["%s"] * len(vehicle_ids))
        sql = (
            f"SELECT vehicle_id, CAST(strftime('%%s', reported_at) AS INTEGER) / 900, MAX(plugged_in) "  # noqa: S608 - our table; values are parameters
            f"FROM {table} WHERE vehicle_id IN ({marks}) AND reported_at >= %s AND reported_at <= %s "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        params = [*vehicle_ids, *bounds]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or rows[end][0] != rows[start][0]:
            chunk = rows[start:end]
            quarters = np.fromiter((r[1] for r in chunk), dtype=np.float64, count=len(chunk))
            plugged = np.fromiter((bool(r[2]) for r in chunk), dtype=bool, count=len(chunk))
            found[rows[start][0]] = (quarters * prediction.SLOT_S + prediction.SLOT_S / 2, plugged)
            start = end
    return found


def profiles_learn(
    *, now: datetime | None = None, vehicle_ids: Sequence[str] | None = None, chunk_size: int = PROFILE_CHUNK
) -> dict[str, int]:
    """(Re)learn the plug-in profile of every active vehicle (or of ``vehicle_ids``)
    from the last ``telemetry.prediction_history_days`` of history, in chunks of
    vehicles (each one query and one upsert). A vehicle without usable history
    loses its stale profile. Idempotent: a rerun at the same ``now`` stores the
    same profiles. Profiles below the engine's minimum coverage are stored
    too; the forecast falls back to the deterministic engine for them."""
    cfg = settings.V2G.telemetry
    now = now or timezone.now()
    tz_key = settings.V2G.scheduler.time_zone
    since = now - timedelta(days=cfg.prediction_history_days)
    if vehicle_ids is None:
        vehicle_ids = list(Vehicle.objects.active().order_by("id").values_list("id", flat=True))
    learned = 0
    for begin in range(0, len(vehicle_ids), chunk_size):
        chunk = list(vehicle_ids[begin : begin + chunk_size])
        rows = []
        for vehicle_id, (t, plugged) in history_quarters(chunk, since, now).items():
            profile = prediction.learn_profile_arrays(t, plugged, now.timestamp(), tz_key)
            if profile is not None:
                rows.append(
                    PlugProfile(
                        vehicle_id=vehicle_id,
                        tz_key=tz_key,
                        prob=profile.to_bytes(),
                        covered_s=profile.covered_s,
                        learned_at=now,
                    )
                )
        with transaction.atomic():
            PlugProfile.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["vehicle"],
                update_fields=["tz_key", "prob", "covered_s", "learned_at"],
            )
            PlugProfile.objects.filter(vehicle_id__in=chunk).exclude(
                vehicle_id__in=[r.vehicle_id for r in rows]
            ).delete()
        learned += len(rows)
    log.info("plug-in profiles: %d of %d vehicle(s) learned", learned, len(vehicle_ids))
    return {"vehicles": len(vehicle_ids), "learned": learned}
