"""Learned plug-in profiles on the real database (PostgreSQL and SQLite): the
history thinned in SQL, the nightly learning job, idempotence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from fleet.models import Fleet, Vehicle
from telemetry import prediction, services
from telemetry.models import PlugProfile, VehicleStateHistory

pytestmark = pytest.mark.django_db
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2025, 3, 25, 11, 0, tzinfo=UTC)  # a Tuesday, 12:00 in Paris


@pytest.fixture
def fleet():
    fleet = Fleet.objects.create(id="f", name="F")
    for vid in ("ev-1", "ev-2", "ev-3"):
        Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=11, max_discharge_kw=10)
    return fleet


def history(vehicle_id: str, days: float, step_min: int, plugged_at) -> None:
    rows, t = [], NOW - timedelta(days=days)
    while t < NOW:
        rows.append(
            VehicleStateHistory(
                vehicle_id=vehicle_id, soc=0.5, plugged_in=plugged_at(t), power_kw=0.0,
                reported_at=t, received_at=t, source="push",
            )
        )  # fmt: skip
        t += timedelta(minutes=step_min)
    VehicleStateHistory.objects.bulk_create(rows)


def commuter(t: datetime) -> bool:
    local = t.astimezone(PARIS)
    return local.hour >= 18 or (local.hour, local.minute) < (7, 30)


def test_history_is_thinned_to_quarter_hours_plugged_if_plugged_at_any_report(fleet):
    base = datetime(2025, 3, 25, 10, 0, tzinfo=UTC)
    for minute, plugged in ((1, False), (7, True), (14, False), (16, False), (44, False)):
        t = base + timedelta(minutes=minute)
        VehicleStateHistory.objects.create(
            vehicle_id="ev-1", soc=0.5, plugged_in=plugged, power_kw=0.0, reported_at=t, received_at=t,
            source="push",
        )  # fmt: skip
    got = services.history_quarters(["ev-1", "ev-2"], base, base + timedelta(hours=1))
    assert list(got) == ["ev-1"]
    t, plugged = got["ev-1"]
    q0 = base.timestamp() // 900
    assert list(t) == [(q0 + k) * 900 + 450 for k in (0, 1, 2)]
    assert list(plugged) == [True, False, False]


def test_learned_profiles_match_the_engine_and_relearning_is_idempotent(fleet):
    history("ev-1", 14, 5, commuter)  # two weeks of 5-minute pushes
    history("ev-2", 1, 15, commuter)  # too little: stored, but the forecast falls back
    assert services.profiles_learn(now=NOW) == {"vehicles": 3, "learned": 2}
    stored = services.plug_profiles(["ev-1", "ev-2", "ev-3"])
    assert set(stored) == {"ev-1", "ev-2"}

    samples = [
        prediction.Sample(r.reported_at, r.soc, r.plugged_in, r.power_kw)
        for r in VehicleStateHistory.objects.filter(vehicle_id="ev-1")
    ]
    direct = prediction.HistoryEngine().profile(samples, NOW)
    assert np.abs(stored["ev-1"].prob - direct.prob).max() <= 0.5 / 255 + 1e-9
    assert stored["ev-1"].covered_s == direct.covered_s

    engine = services.prediction_engine()
    facts = prediction.VehicleFacts(
        "ev-1", 50, 11, 10, 0.2, 0.8, None, prediction.Sample(NOW, 0.5, False, 0.0)
    )
    window = engine.forecast_many([facts], [stored["ev-1"]], NOW, [0])[0].plugin_window
    assert [w.astimezone(PARIS).strftime("%H:%M") for w in window] == ["18:00", "07:30"]
    fallback = engine.forecast_many([facts], [stored["ev-2"]], NOW, [0])[0].plugin_window
    assert fallback is None  # one day of history: deterministic, unplugged -> unknown

    before = dict(PlugProfile.objects.values_list("vehicle_id", "prob"))
    assert services.profiles_learn(now=NOW) == {"vehicles": 3, "learned": 2}
    assert {k: bytes(v) for k, v in PlugProfile.objects.values_list("vehicle_id", "prob")} == {
        k: bytes(v) for k, v in before.items()
    }


def test_a_vehicle_whose_history_is_gone_loses_its_profile(fleet):
    history("ev-1", 5, 15, commuter)
    services.profiles_learn(now=NOW)
    assert PlugProfile.objects.filter(vehicle_id="ev-1").exists()
    VehicleStateHistory.objects.all().delete()
    assert services.profiles_learn(now=NOW, chunk_size=2) == {"vehicles": 3, "learned": 0}
    assert not PlugProfile.objects.exists()


def test_learning_runs_as_a_beat_job(fleet):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="telemetry.learn_profiles")
    assert task.enabled and task.crontab is not None and str(task.crontab.timezone) == "Europe/Paris"
