"""The signal generator loop and its commands, on the real database (no broker:
signal_submit enqueues allocation on commit, and these tests never commit)."""

from __future__ import annotations

import io
import itertools
import threading
import time

import pytest
from django.core.management import call_command

from dispatch import generator_runner, services
from dispatch.generator import SCENARIOS, generate
from dispatch.generator_runner import generator_run
from dispatch.models import Dispatch, FlexibilitySignal, SignalSource
from fleet.models import Fleet
from tests.conftest import metric_value
from tests.test_commands import manage
from v2g_project.config import RteGeneratorConfig

pytestmark = pytest.mark.django_db


class FakeClock:
    def __init__(self, stop: threading.Event, stop_after_waits: int | None = None) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.stop, self.stop_after_waits = stop, stop_after_waits

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        self.waits.append(seconds)
        if self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits:
            self.stop.set()
        return self.stop.is_set()


METRICS = (
    ("rte_generator_signals_total", {"signal_type": "FCR"}),
    ("rte_generator_power_requested_kw_sum", {}),
    ("rte_generator_emit_errors_total", {}),
    ("rte_generator_interval_seconds_count", {}),
    ("rte_generator_interval_seconds_sum", {}),
)


def scrape(client) -> list[float]:
    return [metric_value(client, name, **labels) for name, labels in METRICS]


def test_a_scenario_is_submitted_on_time_persisted_and_counted(client):
    cfg = RteGeneratorConfig(seed=3)
    expected = generate(cfg, "steady", generator_runner.timezone.now(), count=4)
    Fleet.objects.create(id="gen", name="Generator fleet")
    stop = threading.Event()
    fake = FakeClock(stop)
    before = scrape(client)
    run = generator_run(
        stop, scenario="steady", cfg=cfg, count=4, fleet_id="gen", clock=fake.clock, wait=fake.wait
    )
    assert (run.emitted, run.errors) == (4, 0)
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(expected)]
    assert fake.waits == pytest.approx(gaps)  # slept until each signal was due
    signals = list(FlexibilitySignal.objects.order_by("created_at"))
    assert [(s.signal_type, s.power_kw, s.duration_s) for s in signals] == [
        (e.signal_type, e.power_kw, e.duration_s) for e in expected
    ]
    assert {s.source for s in signals} == {SignalSource.GENERATOR}
    assert {s.fleet_id for s in signals} == {"gen"}
    assert Dispatch.objects.filter(signal__in=signals, round=0).count() == 4
    after = scrape(client)
    assert after[0] - before[0] == 4
    assert after[1] - before[1] == pytest.approx(sum(e.power_kw for e in expected))
    assert after[2] - before[2] == 0
    assert after[3] - before[3] == 3
    assert after[4] - before[4] == pytest.approx(sum(gaps))
    assert metric_value(client, "rte_generator_last_emit_timestamp_seconds") == pytest.approx(
        time.time(), abs=60
    )


def test_speed_plays_the_scenario_faster():
    stop = threading.Event()
    fake = FakeClock(stop)
    run = generator_run(stop, scenario="afrr", count=3, speed=8, clock=fake.clock, wait=fake.wait)
    assert run.emitted == 3
    assert fake.waits == [0.5, 0.5]
    assert set(FlexibilitySignal.objects.values_list("signal_type", flat=True)) == {"aFRR"}


def test_a_failed_submission_is_counted_and_the_loop_goes_on(client, monkeypatch, caplog):
    real, calls = services.signal_submit, []

    def flaky(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise services.SignalRejected("power_kw", "refused for the test")
        return real(**kwargs)

    monkeypatch.setattr(services, "signal_submit", flaky)
    stop = threading.Event()
    fake = FakeClock(stop)
    errors_before = metric_value(client, "rte_generator_emit_errors_total")
    run = generator_run(stop, scenario="burst", count=4, clock=fake.clock, wait=fake.wait)
    assert (run.emitted, run.errors) == (3, 1)
    assert FlexibilitySignal.objects.count() == 3
    assert metric_value(client, "rte_generator_emit_errors_total") == errors_before + 1
    assert "could not submit" in caplog.text


def test_stopping_ends_the_loop_at_once():
    stop = threading.Event()
    fake = FakeClock(stop, stop_after_waits=2)
    assert generator_run(stop, scenario="steady", clock=fake.clock, wait=fake.wait).emitted == 2
    # With the real clock: the next signal is 2-5 minutes away, the stop event ends the wait.
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    assert generator_run(stop, scenario="steady").emitted == 1
    assert time.monotonic() - began < 10


def test_rte_generate_command_runs_a_scenario():
    out = io.StringIO()
    call_command("rte_generate", "--scenario", "afrr", "--count", "3", "--speed", "1000", stdout=out)
    assert out.getvalue().count("[rte-gen] 20") == 3
    assert "stopped: 3 signal(s) submitted, 0 error(s)" in out.getvalue()
    assert FlexibilitySignal.objects.filter(source="generator", signal_type="aFRR").count() == 3


@pytest.mark.parametrize("command", [("rte_generate", "--scenario"), ("demo", "--rte-gen-scenario")])
def test_an_unknown_scenario_is_refused_with_the_choices(command):
    result = manage(*command, "calm", timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'calm'" in result.stderr
    assert all(f"'{name}'" in result.stderr for name in SCENARIOS)


def test_replay_without_a_file_is_a_clear_error():
    result = manage("rte_generate", "--scenario", "replay", "--count", "1", timeout=60)
    assert result.returncode != 0
    assert "needs rteGenerator.replay_file" in result.stderr
    assert "Traceback" not in result.stderr
