"""The Beat-driven signal generator (``rteGenerator.runner: beat``): ticks plan timed
tasks that a real Celery worker runs; repeated ticks and emits never double a signal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dispatch.generator import generate
from dispatch.generator_runner import generator_emit, generator_tick
from dispatch.models import FlexibilitySignal, GeneratorState, SignalSource
from fleet.models import Fleet
from tests.conftest import metric_value, wait_for


@pytest.fixture
def beat_generator(settings):
    def configure(**changes):
        cfg = settings.V2G.rte_generator.model_copy(
            update={
                "enabled": True,
                "runner": "beat",
                "scenario": "burst",
                "min_interval_seconds": 1.0,
                "max_interval_seconds": 2.0,
                **changes,
            }
        )
        settings.V2G = settings.V2G.model_copy(update={"rte_generator": cfg})
        return cfg

    return configure


@pytest.mark.django_db
def test_a_tick_does_nothing_unless_the_beat_runner_is_enabled(settings, beat_generator):
    assert generator_tick() == {"planned": 0, "skipped": 0, "enabled": False}
    beat_generator(runner="process")
    assert generator_tick()["enabled"] is False
    assert not GeneratorState.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_ticks_plan_each_signal_once_and_the_worker_submits_them(celery_worker, beat_generator, client):
    Fleet.objects.create(id="gen", name="Generator fleet")
    cfg = beat_generator(fleet_id="gen")
    before = metric_value(client, "rte_generator_signals_total")

    now = timezone.now()
    first = generator_tick(now=now, horizon_s=6)
    again = generator_tick(now=now, horizon_s=6)  # Beat fired twice (or two Beats): nothing more is planned
    state = GeneratorState.objects.get()
    expected = generate(cfg, "burst", state.started_at, until=state.started_at + timedelta(seconds=6))

    assert first["planned"] == len(expected) >= 3 and again["planned"] == 0
    assert state.planned == len(expected)
    wait_for(
        lambda: FlexibilitySignal.objects.filter(source=SignalSource.GENERATOR).count() == len(expected),
        30,
        "the worker to submit the planned signals",
    )
    signals = list(FlexibilitySignal.objects.filter(source=SignalSource.GENERATOR).order_by("start_at"))
    assert [(s.signal_type, round(s.power_kw, 6), s.duration_s) for s in signals] == [
        (e.signal_type, round(e.power_kw, 6), e.duration_s) for e in expected
    ]
    assert all(s.fleet_id == "gen" for s in signals)
    # Each was submitted at its time (the ETA), not all at once.
    for signal, item in zip(signals, expected, strict=True):
        assert signal.start_at == item.at
        assert signal.created_at >= item.at - timedelta(seconds=1)
    assert metric_value(client, "rte_generator_signals_total") - before == len(expected)

    # A redelivered emit finds its signal and counts nothing.
    signal = signals[0]
    again = generator_emit(
        external_id=signal.external_id, signal_type=signal.signal_type, power_kw=signal.power_kw,
        duration_s=signal.duration_s, start_at=signal.start_at.isoformat(), fleet_id="gen",
    )  # fmt: skip
    assert again == "duplicate"
    assert metric_value(client, "rte_generator_signals_total") - before == len(expected)


@pytest.mark.django_db
def test_signals_already_over_when_planned_are_skipped_and_counted(beat_generator, client):
    cfg = beat_generator(scenario="steady", min_interval_seconds=60, max_interval_seconds=60)
    key = f"steady:{cfg.seed}:"
    now = timezone.now()
    GeneratorState.objects.create(key=key, started_at=now - timedelta(hours=2))  # Beat was down for 2 hours
    errors = metric_value(client, "rte_generator_emit_errors_total")

    result = generator_tick(now=now, horizon_s=5)

    assert result["skipped"] > 100 and result["planned"] <= 12  # only those still running are planned
    assert metric_value(client, "rte_generator_emit_errors_total") - errors == result["skipped"]
    assert GeneratorState.objects.get().planned == result["skipped"] + result["planned"]
