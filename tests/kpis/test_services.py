"""KPI recomputation from the Command table, the backfill command and the Beat task."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command

from dispatch.models import CommandStatus
from kpis import services, tasks
from kpis.models import VehicleDayKpi
from tests.conftest import replace
from tests.kpis.fixtures import command, telemetry, vehicle

pytestmark = pytest.mark.django_db
DAY = dt.date(2025, 6, 3)


def figures():
    return sorted(
        VehicleDayKpi.objects.values_list(
            "vehicle_id", "day", "injected_kwh", "consumed_kwh", "co2_avoided_g", "energy_ratio"
        )
    )


@pytest.fixture
def fleet_commands(settings):
    settings.V2G = replace(settings.V2G, metrics=replace(settings.V2G.metrics, emission_factor=50.0))
    vehicle("ev-1")
    vehicle("ev-2")
    vehicle("other.1", fleet_id="f2")
    command("ev-1", 10, "2025-06-03T10:00:00+02:00", 1800)  # 5 kWh
    command("ev-1", -4, "2025-06-03T12:00:00+02:00", 3600, acked="2025-06-03T12:15:00+02:00")  # 3 kWh
    command("ev-2", 8, "2025-06-03T23:30:00+02:00", 3600)  # 4 + 4 kWh across midnight
    command("ev-2", 8, "2025-06-03T09:00:00+02:00", 3600, status=CommandStatus.TIMED_OUT)  # not counted
    command("other.1", 6, "2025-06-03T10:00:00+02:00", 600)  # 1 kWh


def test_a_day_from_acked_commands(fleet_commands):
    assert services.kpis_compute_day(DAY) == 3
    assert figures() == [
        ("ev-1", DAY, 5.0, 3.0, 250.0, pytest.approx(5 / 3)),
        ("ev-2", DAY, 4.0, 0.0, 200.0, None),
        ("other.1", DAY, 1.0, 0.0, 50.0, None),
    ]


def test_telemetry_wins_where_it_exists_and_the_commands_elsewhere(fleet_commands):
    # ev-1 reported +6 kW (not the commanded 10) over 10:00-10:30, and its own
    # charging at -2 kW over 14:00-15:00 (no command): both are measured. Its
    # -4 kW command 12:15-13:00 has no telemetry: 3 kWh from the command.
    telemetry("ev-1", 6, "2025-06-03T10:00:00+02:00", 30)
    telemetry("ev-1", 0, "2025-06-03T10:30:00+02:00", 5)
    telemetry("ev-1", -2, "2025-06-03T14:00:00+02:00", 60)
    telemetry("ev-1", 0, "2025-06-03T15:00:00+02:00", 5)
    # ev-2 (commanded +8 kW 23:30-00:30) reported +6 kW every 5 min from 23:30
    # to 00:10; the last sample holds until 00:25: 3 kWh on the 3rd; on the 4th
    # 2.5 kWh measured (00:00-00:25) + 8 kW x 5 min from the command.
    telemetry("ev-2", 6, "2025-06-03T23:30:00+02:00", 45)
    # A vehicle with telemetry only (its own charging) gets a row too.
    vehicle("ev-3")
    telemetry("ev-3", -3, "2025-06-03T08:00:00+02:00", 20)
    telemetry("ev-3", 0, "2025-06-03T08:20:00+02:00", 5)
    assert services.kpis_compute_range(DAY, DAY + dt.timedelta(days=1)) == 5
    assert figures() == [
        ("ev-1", DAY, 3.0, 5.0, 150.0, pytest.approx(0.6)),
        ("ev-2", DAY, 3.0, 0.0, 150.0, None),
        (
            "ev-2",
            DAY + dt.timedelta(days=1),
            pytest.approx(2.5 + 8 / 12),
            0.0,
            pytest.approx(50 * (2.5 + 8 / 12), abs=1e-3),
            None,
        ),
        ("ev-3", DAY, 0.0, 1.0, 0.0, 0.0),
        ("other.1", DAY, 1.0, 0.0, 50.0, None),
    ]
    shares = dict(VehicleDayKpi.objects.filter(day=DAY).values_list("vehicle_id", "measured_share"))
    assert shares == {"ev-1": pytest.approx(5 / 8, abs=1e-4), "ev-2": 1.0, "ev-3": 1.0, "other.1": 0.0}
    # Idempotent with telemetry too.
    first = figures()
    call_command(
        "kpis_backfill", "--start", "2025-06-03", "--end", "2025-06-04", "--no-progress", stdout=io.StringIO()
    )
    assert figures() == first


def test_backfill_is_idempotent_and_resumable(fleet_commands):
    out = io.StringIO()
    call_command("kpis_backfill", "--start", "2025-06-02", "--end", "2025-06-04", "--no-progress", stdout=out)
    assert "3 day(s)" in out.getvalue() and "4 vehicle-day row(s)" in out.getvalue()
    first = figures()
    assert ("ev-2", DAY + dt.timedelta(days=1), 4.0, 0.0, 200.0, None) in first
    call_command("kpis_backfill", "--start", "2025-06-02", "--end", "2025-06-04", "--no-progress", stdout=out)
    call_command("kpis_backfill", "--start", "2025-06-03", "--no-progress", stdout=out)  # one day again
    assert figures() == first
    assert VehicleDayKpi.objects.count() == 4


def test_a_recomputation_drops_rows_that_have_no_energy_any_more(fleet_commands):
    services.kpis_compute_day(DAY)
    from dispatch.models import Command

    Command.objects.filter(vehicle_id="ev-2").update(status=CommandStatus.REJECTED)
    services.kpis_compute_day(DAY, fleet_id="f1")
    assert [row[0] for row in figures()] == ["ev-1", "other.1"]


def test_backfill_of_one_fleet(fleet_commands):
    call_command(
        "kpis_backfill", "--start", "2025-06-03", "--fleet", "f2", "--no-progress", stdout=io.StringIO()
    )
    assert [row[0] for row in figures()] == ["other.1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2025-06-04", "--end", "2025-06-03"], "before --start"),
        (["--start", "2025-06-03", "--fleet", "nope"], "no fleet"),
    ],
)
def test_backfill_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("kpis_backfill", *args, "--no-progress")


def test_backfill_prints_a_progress_bar(fleet_commands):
    err = io.StringIO()
    call_command(
        "kpis_backfill", "--start", "2025-06-01", "--end", "2025-06-05", stdout=io.StringIO(), stderr=err
    )
    assert "5/5" in err.getvalue() and "day" in err.getvalue()


def test_marginal_factor_file(fleet_commands, settings, tmp_path):
    path = tmp_path / "mef.csv"
    lines = ["timestamp,gco2_per_kwh"]
    start = dt.datetime.fromisoformat("2025-06-03T00:00:00+02:00")
    for quarter in range(96):
        lines.append(
            f"{(start + dt.timedelta(minutes=15 * quarter)).isoformat()},{400 if quarter < 48 else 600}"
        )
    path.write_text("\n".join(lines) + "\n")
    settings.V2G = replace(settings.V2G, metrics=replace(settings.V2G.metrics, emission_factor_csv=str(path)))
    services.kpis_compute_day(DAY)
    avoided = {row[0]: row[4] for row in figures()}
    # ev-1: 5 kWh injected before noon at 400, 3 kWh charged after at 600.
    assert avoided["ev-1"] == pytest.approx(5 * 400 - 3 * 600)
    path.write_text("timestamp,gco2_per_kwh\n2025-06-03T00:00:00+02:00,oops\n")
    with pytest.raises(CommandError, match=rf"{path}, line 2: not a number"):
        call_command("kpis_backfill", "--start", "2025-06-03", "--no-progress")


def test_the_beat_task_recomputes_today_and_yesterday(fleet_commands, monkeypatch):
    now = dt.datetime.fromisoformat("2025-06-04T08:00:00+02:00")
    monkeypatch.setattr(services.timezone, "now", lambda: now)
    assert tasks.kpis_compute_recent_task.apply().get() == {
        "start": "2025-06-03",
        "end": "2025-06-04",
        "rows": 4,
    }
    assert VehicleDayKpi.objects.count() == 4
