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
