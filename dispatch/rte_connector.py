"""The RTE connector: poll RTE's activation API, turn activations into signals (issue 10).

One poll (:func:`rte_poll`):

1. asks for the activations published since a little before the end of the
   last successful poll (``rte.overlap_seconds``; ``rte.lookback_seconds`` on
   the very first one);
2. stores every item it has not seen before as an :class:`RteActivation`
   (unique RTE id; an item without a usable id is kept under a hash of its
   content) and moves the cursor on, in one transaction: nothing received is
   ever lost, and nothing is stored twice;
3. submits every pending activation through ``services.signal_submit``
   (source ``rte``, ``external_id`` = the RTE id, so even a crash between the
   submission and the status update cannot make a second signal). One that
   ended before it could be submitted (the connector was down) is recorded
   as ``expired``, one that is not valid as ``rejected``, each with its reason.

:func:`rte_connector_run` polls every ``rte.poll_interval_seconds`` until
stopped; after a failure it backs off exponentially with jitter up to
``rte.backoff_max_seconds``, honouring ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from dispatch import services
from dispatch.metrics import RTE_ACTIVATIONS, RTE_LAST_SUCCESS, RTE_POLLS, RTE_TOKEN_FETCHES
from dispatch.models import RteActivation, RteActivationStatus, RteConnectorState, SignalSource
from dispatch.rte_api import ActivationInvalid, activation_id_of, activation_parse, backoff_delay, poll_window
from dispatch.rte_client import RteAuthError, RteClient, RteError, RteProtocolError, RteUnavailable

log = logging.getLogger(__name__)

SUBMIT_BATCH = 500
BACKOFF_BASE_S = 2.0


@dataclass(frozen=True)
class PollResult:
    received: int  # items in the answer
    new: int  # of which not seen before
    submitted: int = 0
    expired: int = 0
    rejected: int = 0


def _storable(item: object) -> object:
    """The item as JSON the database accepts (PostgreSQL refuses NUL in JSON text)."""
    return json.loads(json.dumps(item, default=str).replace("\\u0000", "\\ufffd"))


def _key(item: object) -> str:
    aid = activation_id_of(item)
    if aid is not None:
        return aid
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()
    return f"invalid-{digest[:40]}"


def activations_store(items: Iterable[object]) -> int:
    """Store the items not seen before (as pending, or rejected when they carry no
    usable id); returns how many were new. Safe to run twice on the same items."""
    by_key: dict[str, object] = {}
    for item in items:
        by_key.setdefault(_key(item), item)
    if not by_key:
        return 0
    known = set(
        RteActivation.objects.filter(activation_id__in=by_key).values_list("activation_id", flat=True)
    )
    rows = []
    for key, item in by_key.items():
        if key in known:
            continue
        rejected = key.startswith("invalid-") and activation_id_of(item) is None
        rows.append(
            RteActivation(
                activation_id=key,
                payload=_storable(item),
                status=RteActivationStatus.REJECTED if rejected else RteActivationStatus.PENDING,
                reason="activation_id: missing or not a usable string" if rejected else "",
                handled_at=timezone.now() if rejected else None,
            )
        )
    RteActivation.objects.bulk_create(rows, ignore_conflicts=True)  # a concurrent connector stored it: fine
    duplicates = len(known)
    if duplicates:
        RTE_ACTIVATIONS.labels(status="duplicate").inc(duplicates)
    for row in rows:
        if row.status == RteActivationStatus.REJECTED:
            RTE_ACTIVATIONS.labels(status="rejected").inc()
            log.warning("RTE activation without a usable id rejected (stored as %s)", row.activation_id)
    return len(rows)


def _finish(pk: int, status: str, reason: str = "", signal_id=None) -> bool:
    updated = RteActivation.objects.filter(pk=pk, status=RteActivationStatus.PENDING).update(
        status=status, reason=reason[:2000], signal_id=signal_id, handled_at=timezone.now()
    )
    if updated:
        RTE_ACTIVATIONS.labels(status=status).inc()
    return bool(updated)


def activations_submit(*, fleet_id: str | None = None, now: datetime | None = None) -> Counter[str]:
    """Submit every pending activation as a signal; returns counts by final status."""
    counts: Counter[str] = Counter()
    while True:
        batch = list(
            RteActivation.objects.filter(status=RteActivationStatus.PENDING)
            .order_by("received_at", "id")
            .values_list("pk", "activation_id", "payload")[:SUBMIT_BATCH]
        )
        for pk, activation_id, payload in batch:
            counts[_submit_one(pk, activation_id, payload, fleet_id=fleet_id, now=now)] += 1
        if len(batch) < SUBMIT_BATCH:
            return counts


def _submit_one(
    pk: int, activation_id: str, payload: object, *, fleet_id: str | None, now: datetime | None
) -> str:
    now = now or timezone.now()
    try:
        activation = activation_parse(payload)
    except ActivationInvalid as exc:
        log.warning("RTE activation %s rejected: %s", activation_id, exc)
        _finish(pk, RteActivationStatus.REJECTED, str(exc))
        return RteActivationStatus.REJECTED
    if activation.end_at <= now:
        reason = f"ended at {activation.end_at.isoformat()}, before it could be submitted"
        log.warning("RTE activation %s expired: %s", activation_id, reason)
        _finish(pk, RteActivationStatus.EXPIRED, reason)
        return RteActivationStatus.EXPIRED
    try:
        with transaction.atomic():
            signal, dispatch = services.signal_submit(
                signal_type=activation.signal_type,
                power_kw=activation.power_kw,
                duration_s=activation.duration_s,
                start_at=activation.start_at,
                valid_until=activation.end_at,
                source=SignalSource.RTE,
                fleet_id=fleet_id or None,
                external_id=activation.activation_id,
            )
            _finish(pk, RteActivationStatus.SUBMITTED, signal_id=signal.id)
    except services.SignalRejected as exc:
        log.warning("RTE activation %s rejected by the dispatcher: %s", activation_id, exc)
        _finish(pk, RteActivationStatus.REJECTED, str(exc))
        return RteActivationStatus.REJECTED
    except DatabaseError:
        raise  # left pending: the next poll submits it
    except Exception as exc:  # a bug must not stall every activation behind this one
        log.exception("RTE activation %s could not be submitted", activation_id)
        _finish(pk, RteActivationStatus.REJECTED, f"internal error: {type(exc).__name__}: {exc}")
        return RteActivationStatus.REJECTED
    log.info(
        "RTE activation %s: %s %+.3f kW until %s -> dispatch %s",
        activation_id,
        activation.signal_type,
        activation.power_kw,
        activation.end_at.isoformat(),
        dispatch.id,
    )
    return RteActivationStatus.SUBMITTED


def rte_poll(client: RteClient, *, cfg, now: datetime | None = None) -> PollResult:
    """One poll: fetch, store (and move the cursor), submit. Raises RteError after recording it."""
    now = now or timezone.now()
    state, _ = RteConnectorState.objects.get_or_create(api_url=client.api_url[:500])
    start, end = poll_window(
        now, state.polled_until, overlap_s=cfg.overlap_seconds, lookback_s=cfg.lookback_seconds
    )
    fetches = client.token_fetches
    try:
        items = client.activations(start, end)
    except RteError as exc:
        RteConnectorState.objects.filter(pk=state.pk).update(
            last_error=str(exc)[:2000], last_error_at=now, consecutive_failures=F("consecutive_failures") + 1
        )
        outcome = {
            RteUnavailable: "unavailable",
            RteAuthError: "auth_error",
            RteProtocolError: "protocol_error",
        }
        RTE_POLLS.labels(outcome=outcome.get(type(exc), "error")).inc()
        raise
    finally:
        RTE_TOKEN_FETCHES.inc(client.token_fetches - fetches)
    with transaction.atomic():
        new = activations_store(items)
        RteConnectorState.objects.filter(pk=state.pk).update(
            polled_until=end, last_success_at=now, consecutive_failures=0, last_error=""
        )
    RTE_POLLS.labels(outcome="ok").inc()
    RTE_LAST_SUCCESS.set(time.time())
    counts = activations_submit(fleet_id=cfg.fleet_id or None, now=now)
    result = PollResult(
        received=len(items),
        new=new,
        submitted=counts[RteActivationStatus.SUBMITTED],
        expired=counts[RteActivationStatus.EXPIRED],
        rejected=counts[RteActivationStatus.REJECTED],
    )
    if result.new or result.submitted or result.expired or result.rejected:
        log.info("RTE poll %s .. %s: %s", start.isoformat(), end.isoformat(), result)
    return result


def rte_connector_run(
    stop_event: threading.Event,
    client: RteClient,
    *,
    cfg,
    polls: int | None = None,
    wait: Callable[[float], bool] | None = None,
    rng: random.Random | None = None,
    on_poll: Callable[[PollResult | None, float], None] | None = None,
) -> int:
    """Poll until ``stop_event`` is set (or ``polls`` polls were made); returns the polls made.

    A failure (RTE unreachable, credentials refused, a database blip, a bug)
    is logged and followed by a backoff; it never ends the loop.
    """
    wait = wait or stop_event.wait
    rng = rng or random.Random()
    failures = made = 0
    log.info("RTE connector: polling %s every %s s", client.api_url, cfg.poll_interval_seconds)
    while not stop_event.is_set() and (polls is None or made < polls):
        result: PollResult | None = None
        retry_after: float | None = None
        try:
            if not connection.in_atomic_block:  # a long-lived process: drop a dead or aged connection
                close_old_connections()
            result = rte_poll(client, cfg=cfg)
            failures = 0
        except RteError as exc:
            failures += 1
            retry_after = exc.retry_after_s
            level = logging.ERROR if isinstance(exc, RteAuthError) else logging.WARNING
            log.log(level, "RTE connector: poll failed (%d in a row): %s", failures, exc)
        except DatabaseError as exc:
            failures += 1
            RTE_POLLS.labels(outcome="error").inc()
            log.warning("RTE connector: database error (%d in a row): %s", failures, exc)
        except Exception:
            failures += 1
            RTE_POLLS.labels(outcome="error").inc()
            log.exception("RTE connector: unexpected error (%d in a row)", failures)
        made += 1
        if failures:
            delay = backoff_delay(
                failures,
                base_s=min(BACKOFF_BASE_S, cfg.poll_interval_seconds),
                cap_s=cfg.backoff_max_seconds,
                rng=rng,
            )
            delay = max(delay, min(retry_after or 0.0, cfg.backoff_max_seconds))
        else:
            delay = float(cfg.poll_interval_seconds)
        if on_poll:
            on_poll(result, delay)
        if polls is not None and made >= polls:
            break
        if wait(delay):
            break
    log.info("RTE connector stopped after %d poll(s)", made)
    return made
