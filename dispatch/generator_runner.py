"""Emitting synthetic RTE signals: the generator loop (issue 10).

:func:`generator_run` walks a scenario of ``dispatch.generator``, waits until
each signal is due and submits it through ``services.signal_submit`` (source
``generator``), so a synthetic signal is persisted and dispatched like any
other. It records the ``rte_generator_*`` metrics (SPEC §12). A signal that
cannot be submitted is logged and counted, and the loop goes on; setting the
stop event ends the loop at once (it never waits past it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from dispatch import services
from dispatch.generator import GeneratorConfig, signals_iter
from dispatch.metrics import (
    GENERATOR_EMIT_ERRORS,
    GENERATOR_INTERVAL,
    GENERATOR_LAST_EMIT,
    GENERATOR_POWER_SUM,
    GENERATOR_SIGNALS,
)
from dispatch.models import SignalSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorRun:
    emitted: int
    errors: int


def generator_run(
    stop_event: threading.Event,
    *,
    scenario: str | None = None,
    cfg: GeneratorConfig | None = None,
    count: int | None = None,
    speed: float = 1.0,
    fleet_id: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[float], bool] | None = None,
    on_emit: Callable[[datetime, str, float, float], None] | None = None,
) -> GeneratorRun:
    """Emit the scenario's signals until ``count`` were handled or ``stop_event`` is set.

    ``speed`` > 1 plays the scenario faster than real time. ``clock`` and
    ``wait`` (returns True when stopped; default ``stop_event.wait``) let
    tests run on a fake clock. ``scenario`` defaults to the config's.
    """
    if not speed > 0:
        raise ValueError("speed must be > 0")
    cfg = cfg or settings.V2G.rte_generator
    scenario = scenario or cfg.scenario
    wait = wait or stop_event.wait
    start = timezone.now()
    origin = clock()
    emitted = errors = 0
    previous_at: datetime | None = None
    log.info("signal generator: scenario %s, seed %s, speed %s", scenario, cfg.seed, speed)
    for handled, item in enumerate(signals_iter(cfg, scenario, start)):
        if (count is not None and handled >= count) or stop_event.is_set():
            break
        delay = origin + (item.at - start).total_seconds() / speed - clock()
        if delay > 0 and wait(delay):
            break
        if stop_event.is_set():
            break
        try:
            signal, dispatch = services.signal_submit(
                signal_type=item.signal_type,
                power_kw=item.power_kw,
                duration_s=item.duration_s,
                source=SignalSource.GENERATOR,
                fleet_id=fleet_id,
            )
        except Exception:
            errors += 1
            GENERATOR_EMIT_ERRORS.inc()
            log.exception(
                "signal generator: could not submit %s %+.3f kW for %.0f s",
                item.signal_type,
                item.power_kw,
                item.duration_s,
            )
            continue
        emitted += 1
        GENERATOR_SIGNALS.labels(signal_type=item.signal_type).inc()
        GENERATOR_POWER_SUM.inc(item.power_kw)
        GENERATOR_LAST_EMIT.set(time.time())
        if previous_at is not None:
            GENERATOR_INTERVAL.observe((item.at - previous_at).total_seconds())
        previous_at = item.at
        log.info(
            "signal generator: %s %+.3f kW submitted (dispatch %s)",
            signal.signal_type,
            signal.power_kw,
            dispatch.id,
        )
        if on_emit:
            on_emit(item.at, item.signal_type, item.power_kw, item.duration_s)
    log.info("signal generator stopped: %d submitted, %d errors", emitted, errors)
    return GeneratorRun(emitted=emitted, errors=errors)


# --- the Beat-driven runner (rteGenerator.runner: beat) ------------------------------

TICK_HORIZON_S = 15.0  # each tick plans the signals due before now + this (the Beat period is 10 s)
TICK_MAX_SIGNALS = 5000  # per tick, so a long catch-up never makes one huge transaction


def generator_tick(*, now: datetime | None = None, horizon_s: float = TICK_HORIZON_S) -> dict:
    """Plan the scenario's next signals as timed tasks (``dispatch.generator_emit``, ETA = each
    signal's time). Idempotent: a state row locked for the tick records how far the
    deterministic sequence was planned, and each signal has a stable ``external_id``,
    so a repeated tick or a redelivered emit never submits a signal twice. Signals
    already over when planned (Beat was down) are skipped, and counted as emit errors.
    """
    from django.db import transaction

    from dispatch.models import GeneratorState
    from dispatch.tasks import generator_emit_task

    cfg = settings.V2G.rte_generator
    if not (cfg.enabled and cfg.runner == "beat"):
        return {"planned": 0, "skipped": 0, "enabled": False}
    now = now or timezone.now()
    horizon = now + timedelta(seconds=horizon_s)
    key = f"{cfg.scenario}:{cfg.seed}:{cfg.fleet_id}"
    planned = skipped = 0
    with transaction.atomic():
        GeneratorState.objects.get_or_create(key=key, defaults={"started_at": now})
        state = GeneratorState.objects.select_for_update().get(key=key)
        previous_at: datetime | None = None
        reached = state.planned
        for index, item in enumerate(signals_iter(cfg, cfg.scenario, state.started_at)):
            if item.at >= horizon or index >= state.planned + TICK_MAX_SIGNALS:
                break
            if index >= state.planned:
                end = item.at + timedelta(seconds=item.duration_s)
                if previous_at is not None:
                    GENERATOR_INTERVAL.observe((item.at - previous_at).total_seconds())
                if end <= now:
                    skipped += 1
                else:
                    kwargs = {
                        "external_id": f"{key}:{state.started_at:%Y%m%dT%H%M%S%fZ}:{index}",
                        "signal_type": item.signal_type,
                        "power_kw": item.power_kw,
                        "duration_s": item.duration_s,
                        "start_at": item.at.isoformat(),
                        "fleet_id": cfg.fleet_id or None,
                    }
                    transaction.on_commit(
                        lambda kw=kwargs, at=item.at: generator_emit_task.apply_async(
                            kwargs=kw, eta=max(at, now)
                        )
                    )
                    planned += 1
                reached = index + 1
            previous_at = item.at
        GeneratorState.objects.filter(pk=state.pk).update(planned=reached, planned_until=horizon)
    if skipped:
        GENERATOR_EMIT_ERRORS.inc(skipped)
        log.warning("signal generator (beat): %d signal(s) already over when planned, skipped", skipped)
    return {"planned": planned, "skipped": skipped, "enabled": True}


def generator_emit(
    *,
    external_id: str,
    signal_type: str,
    power_kw: float,
    duration_s: float,
    start_at: str,
    fleet_id: str | None,
) -> str:
    """Submit one planned synthetic signal; a repeated call for the same id does nothing."""
    start = datetime.fromisoformat(start_at)
    try:
        _signal, dispatch, created = services.signal_submit_once(
            signal_type=signal_type,
            power_kw=power_kw,
            duration_s=duration_s,
            start_at=start,
            valid_until=start + timedelta(seconds=duration_s),
            source=SignalSource.GENERATOR,
            fleet_id=fleet_id,
            external_id=external_id,
        )
    except services.SignalRejected as exc:
        GENERATOR_EMIT_ERRORS.inc()
        log.warning("signal generator (beat): %s not submitted: %s", external_id, exc)
        return "rejected"
    if not created:
        return "duplicate"
    GENERATOR_SIGNALS.labels(signal_type=signal_type).inc()
    GENERATOR_POWER_SUM.inc(power_kw)
    GENERATOR_LAST_EMIT.set(time.time())
    log.info(
        "signal generator (beat): %s %+.3f kW submitted (dispatch %s)", signal_type, power_kw, dispatch.id
    )
    return str(dispatch.id)
