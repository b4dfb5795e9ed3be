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
from datetime import datetime

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
