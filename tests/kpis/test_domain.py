"""KPI maths, hand-computed (no database)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from kpis import domain

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def cmd(power_kw, acked, start, duration_s, vehicle="ev-1", valid_until=None):
    start_at = at(start)
    end = start_at + dt.timedelta(seconds=duration_s)
    return domain.AckedCommand(
        vehicle, power_kw, at(acked), start_at, end, at(valid_until) if valid_until else end
    )


def kpis(commands, factor=100.0, marginal=None):
    return domain.daily_kpis(commands, tz=PARIS, emission_factor=factor, marginal_factors=marginal)


def test_ten_kw_for_half_an_hour_is_five_kwh_injected():
    out = kpis([cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 1800)])
    kpi = out[("ev-1", dt.date(2025, 6, 3))]
    assert kpi.injected_kwh == pytest.approx(5.0)
    assert kpi.consumed_kwh == 0
    assert kpi.co2_avoided_g == pytest.approx(500.0)
    assert kpi.energy_ratio is None  # nothing consumed: undefined, never the injected amount


def test_charging_is_consumed_and_the_ratio_divides():
    out = kpis(
        [
            cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 1800),
            cmd(-4, "2025-06-03T12:00:00+02:00", "2025-06-03T12:00:00+02:00", 3600),
        ]
    )
    kpi = out[("ev-1", dt.date(2025, 6, 3))]
    assert (kpi.injected_kwh, kpi.consumed_kwh) == pytest.approx((5.0, 4.0))
    assert kpi.energy_ratio == pytest.approx(1.25)
    assert kpi.co2_avoided_g == pytest.approx(500.0)  # flat factor: injected only


def test_an_ack_later_than_the_start_counts_from_the_ack():
    out = kpis([cmd(10, "2025-06-03T10:06:00+02:00", "2025-06-03T10:00:00+02:00", 1800)])
    assert out[("ev-1", dt.date(2025, 6, 3))].injected_kwh == pytest.approx(4.0)


def test_an_early_ack_counts_from_the_signal_start_and_valid_until_clips():
    out = kpis(
        [
            cmd(
                10,
                "2025-06-03T09:59:00+02:00",
                "2025-06-03T10:00:00+02:00",
                3600,
                valid_until="2025-06-03T10:15:00+02:00",
            )
        ]
    )
    assert out[("ev-1", dt.date(2025, 6, 3))].injected_kwh == pytest.approx(2.5)


def test_a_newer_ack_supersedes_the_command_in_force():
    out = kpis(
        [
            cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 3600),
            cmd(-6, "2025-06-03T10:30:00+02:00", "2025-06-03T10:30:00+02:00", 600),
        ]
    )
    kpi = out[("ev-1", dt.date(2025, 6, 3))]
    # 10 kW for 30 min; -6 kW for 10 min, then nothing (the first is superseded for good).
    assert (kpi.injected_kwh, kpi.consumed_kwh) == pytest.approx((5.0, 1.0))


def test_a_command_across_midnight_is_split_between_local_days():
    out = kpis([cmd(8, "2025-06-03T23:30:00+02:00", "2025-06-03T23:30:00+02:00", 3600)])
    assert out[("ev-1", dt.date(2025, 6, 3))].injected_kwh == pytest.approx(4.0)
    assert out[("ev-1", dt.date(2025, 6, 4))].injected_kwh == pytest.approx(4.0)


def test_the_autumn_dst_day_has_25_hours():
    # 2025-10-26 in Paris: from 00:00+02:00 (22:00 UTC the 25th) to 00:00+01:00 (23:00 UTC the 26th).
    start, end = domain.local_day_bounds(dt.date(2025, 10, 26), PARIS)
    assert (end - start) == dt.timedelta(hours=25)
    out = kpis([cmd(1, "2025-10-25T21:00:00+00:00", "2025-10-25T21:00:00+00:00", 27 * 3600)])
    assert out[("ev-1", dt.date(2025, 10, 25))].injected_kwh == pytest.approx(1.0)
    assert out[("ev-1", dt.date(2025, 10, 26))].injected_kwh == pytest.approx(25.0)
    assert out[("ev-1", dt.date(2025, 10, 27))].injected_kwh == pytest.approx(1.0)


def test_the_spring_dst_day_has_23_hours():
    start, end = domain.local_day_bounds(dt.date(2025, 3, 30), PARIS)
    assert (end - start) == dt.timedelta(hours=23)
    out = kpis([cmd(-2, "2025-03-29T23:00:00+00:00", "2025-03-29T23:00:00+00:00", 23 * 3600)])
    assert out == {("ev-1", dt.date(2025, 3, 30)): domain.DayKpi(0.0, 46.0, 0.0)}


def test_vehicles_are_separate():
    out = kpis(
        [
            cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 1800, vehicle="a"),
            cmd(20, "2025-06-03T10:10:00+02:00", "2025-06-03T10:00:00+02:00", 1800, vehicle="b"),
        ]
    )
    assert out[("a", dt.date(2025, 6, 3))].injected_kwh == pytest.approx(5.0)
    assert out[("b", dt.date(2025, 6, 3))].injected_kwh == pytest.approx(20 * 20 / 60)


def test_marginal_factors_per_quarter_hour_subtract_extra_charging():
    q0 = at("2025-06-03T10:00:00+02:00").astimezone(UTC)
    q1 = q0 + dt.timedelta(minutes=15)
    marginal = {q0: 400.0, q1: 600.0}
    out = kpis(
        [
            cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 1800),  # 2.5 kWh per quarter
            cmd(
                -4, "2025-06-03T12:00:00+02:00", "2025-06-03T12:00:00+02:00", 900
            ),  # 1 kWh, no factor: flat 100
        ],
        marginal=marginal,
    )
    kpi = out[("ev-1", dt.date(2025, 6, 3))]
    assert kpi.co2_avoided_g == pytest.approx(2.5 * 400 + 2.5 * 600 - 1.0 * 100)


def test_factor_file(tmp_path):
    path = tmp_path / "mef.csv"
    path.write_text("timestamp,gco2_per_kwh\n2025-06-03T10:00:00+02:00,400\n2025-06-03T08:15:00Z,450.5\n")
    assert domain.read_marginal_factors(path) == {
        dt.datetime(2025, 6, 3, 8, 0, tzinfo=UTC): 400.0,
        dt.datetime(2025, 6, 3, 8, 15, tzinfo=UTC): 450.5,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,factor\n", "line 1: the header"),
        (
            "timestamp,gco2_per_kwh\n2025-06-03T10:00:00+02:00,400\n2025-06-03T10:00:00,1\n",
            "line 3: timestamp",
        ),
        ("timestamp,gco2_per_kwh\nyesterday,1\n", "line 2: not an ISO 8601"),
        (
            "timestamp,gco2_per_kwh\n2025-06-03T10:05:00+02:00,1\n",
            "line 2: '2025-06-03T10:05:00+02:00' is not on",
        ),
        ("timestamp,gco2_per_kwh\n2025-06-03T10:00:00+02:00,lots\n", "line 2: not a number"),
        ("timestamp,gco2_per_kwh\n2025-06-03T10:00:00+02:00,nan\n", "line 2: gco2_per_kwh nan"),
        ("timestamp,gco2_per_kwh\n2025-06-03T10:00:00+02:00,1,2\n", "line 2: expected 2 columns"),
        ("timestamp,gco2_per_kwh\n2025-06-03T10:00:00+02:00,1\n2025-06-03T08:00:00Z,2\n", "line 3: "),
    ],
)
def test_a_bad_factor_file_names_the_file_and_line(tmp_path, body, message):
    path = tmp_path / "mef.csv"
    path.write_text(body)
    with pytest.raises(domain.FactorFileError) as error:
        domain.read_marginal_factors(path)
    assert str(error.value).startswith(f"{path}, ") and message in str(error.value)


def test_a_missing_factor_file(tmp_path):
    with pytest.raises(domain.FactorFileError, match="cannot read"):
        domain.read_marginal_factors(tmp_path / "nope.csv")


# Telemetry: measured energy where samples cover the time, commands elsewhere.


def samples(power_kw, start, minutes, step_min=5, vehicle="ev-1"):
    """Samples every ``step_min`` minutes from ``start`` (not including start + minutes)."""
    first = at(start)
    return [
        domain.Sample(vehicle, first + dt.timedelta(minutes=m), power_kw) for m in range(0, minutes, step_min)
    ]


def measured(sample_list, commands=(), factor=100.0, marginal=None):
    return domain.daily_kpis(
        commands, tz=PARIS, emission_factor=factor, marginal_factors=marginal, samples=sample_list
    )


def test_samples_every_five_minutes_at_ten_kw_for_half_an_hour_are_five_kwh():
    # 6 samples (10:00 .. 10:25), each holding 5 min until the next; the last
    # holds until the zero sample at 10:30.
    rows = samples(10, "2025-06-03T10:00:00+02:00", 30) + samples(0, "2025-06-03T10:30:00+02:00", 5)
    kpi = measured(rows)[("ev-1", dt.date(2025, 6, 3))]
    assert (kpi.injected_kwh, kpi.consumed_kwh) == pytest.approx((5.0, 0.0))
    assert kpi.co2_avoided_g == pytest.approx(500.0)
    assert kpi.measured_share == 1.0


def test_the_last_sample_holds_for_the_max_gap_only():
    kpi = measured([domain.Sample("ev-1", at("2025-06-03T10:00:00+02:00"), 10.0)])[
        ("ev-1", dt.date(2025, 6, 3))
    ]
    assert kpi.injected_kwh == pytest.approx(10 * domain.MAX_SAMPLE_GAP.total_seconds() / 3600)


def test_telemetry_replaces_the_commands_where_it_covers_the_time():
    # Command: +10 kW 10:00-11:00 (10 kWh). Telemetry covers 10:00-10:30 and
    # measures only 6 kW there: 3 kWh measured + 5 kWh commanded for 10:30-11:00.
    rows = samples(6, "2025-06-03T10:00:00+02:00", 30)
    rows.append(domain.Sample("ev-1", at("2025-06-03T10:30:00+02:00"), 6.0))  # holds 10:30-10:45
    command = cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 3600)
    kpi = measured(rows, [command])[("ev-1", dt.date(2025, 6, 3))]
    # 10:00-10:45 measured at 6 kW (4.5 kWh), 10:45-11:00 from the command (2.5 kWh).
    assert kpi.injected_kwh == pytest.approx(4.5 + 2.5)
    assert kpi.measured_share == pytest.approx(4.5 / 7.0)


def test_a_gap_longer_than_the_max_gap_falls_back_to_the_commands():
    # Samples at 10:00 and 11:00 only (0 kW measured): 10:00-10:15 and
    # 11:00-11:15 are measured (zero), 10:15-11:00 is unknown: the command counts.
    rows = [
        domain.Sample("ev-1", at("2025-06-03T10:00:00+02:00"), 0.0),
        domain.Sample("ev-1", at("2025-06-03T11:00:00+02:00"), 0.0),
    ]
    command = cmd(8, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 7200)  # 10:00-12:00
    kpi = measured(rows, [command])[("ev-1", dt.date(2025, 6, 3))]
    assert kpi.injected_kwh == pytest.approx(8 * (0.75 + 0.75))  # 10:15-11:00 and 11:15-12:00
    assert kpi.measured_share == 0.0


def test_charging_samples_are_consumed_and_make_the_ratio():
    rows = (
        samples(10, "2025-06-03T10:00:00+02:00", 30)
        + samples(-5, "2025-06-03T10:30:00+02:00", 60)
        + samples(0, "2025-06-03T11:30:00+02:00", 5)
    )
    kpi = measured(rows)[("ev-1", dt.date(2025, 6, 3))]
    assert (kpi.injected_kwh, kpi.consumed_kwh) == pytest.approx((5.0, 5.0))
    assert kpi.energy_ratio == pytest.approx(1.0)
    assert kpi.co2_avoided_g == pytest.approx(500.0)  # flat factor: injected only


def test_only_zero_power_telemetry_gives_no_row():
    assert measured(samples(0, "2025-06-03T10:00:00+02:00", 60)) == {}


def test_telemetry_is_split_at_local_midnight():
    # 23:30 to 00:30 local at -4 kW: 2 kWh each day.
    rows = samples(-4, "2025-06-03T23:30:00+02:00", 60) + samples(0, "2025-06-04T00:30:00+02:00", 5)
    out = measured(rows)
    assert out[("ev-1", dt.date(2025, 6, 3))].consumed_kwh == pytest.approx(2.0)
    assert out[("ev-1", dt.date(2025, 6, 4))].consumed_kwh == pytest.approx(2.0)


def test_telemetry_over_the_autumn_dst_day_has_25_hours():
    # Every 5 min at +2 kW from local midnight to the next: 25 h on 2025-10-26.
    start = at("2025-10-26T00:00:00+02:00")
    end = at("2025-10-27T00:00:00+01:00")
    rows, t = [], start
    while t < end:
        rows.append(domain.Sample("ev-1", t, 2.0))
        t += dt.timedelta(minutes=5)
    rows.append(domain.Sample("ev-1", end, 0.0))
    out = measured(rows)
    assert out[("ev-1", dt.date(2025, 10, 26))].injected_kwh == pytest.approx(50.0)
    assert ("ev-1", dt.date(2025, 10, 27)) not in out


def test_telemetry_with_quarter_hour_marginal_factors():
    rows = samples(-4, "2025-06-03T10:00:00+02:00", 30) + samples(0, "2025-06-03T10:30:00+02:00", 5)
    quarter = at("2025-06-03T10:15:00+02:00").astimezone(UTC)
    kpi = measured(rows, factor=100.0, marginal={quarter: 300.0})[("ev-1", dt.date(2025, 6, 3))]
    assert kpi.co2_avoided_g == pytest.approx(-(1.0 * 100 + 1.0 * 300))


def test_telemetry_of_one_vehicle_does_not_hide_the_commands_of_another():
    rows = samples(0, "2025-06-03T10:00:00+02:00", 60, vehicle="ev-2")
    command = cmd(10, "2025-06-03T10:00:00+02:00", "2025-06-03T10:00:00+02:00", 1800)
    out = measured(rows, [command])
    assert out[("ev-1", dt.date(2025, 6, 3))].injected_kwh == pytest.approx(5.0)
    assert ("ev-2", dt.date(2025, 6, 3)) not in out
