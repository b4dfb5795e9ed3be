"""The simulator's pure parts: battery physics, schedules, payloads and options.
No broker, no database, no clock: every moment is given."""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from simulator import config, domain, payloads
from simulator.domain import FixedSchedule, Schedule, Setpoint, Vehicle, VehicleSpec

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # a Monday, 21:00 in Paris
ETA = 0.87
ONE_WAY = math.sqrt(ETA)


def spec(**changes) -> VehicleSpec:
    base = dict(vehicle_id="ev-1", battery_kwh=60.0, max_charge_kw=11.0, max_discharge_kw=11.0, charger="ac",
                is_v2g=True, min_soc=0.2, target_soc=0.8, profile="always", efficiency=ETA, away_kw=0.0)  # fmt: skip
    return VehicleSpec(**{**base, **changes})


def vehicle(soc: float, *, departs_in_h: float | None = None, **changes) -> Vehicle:
    """Plugged in at T0; leaves after ``departs_in_h`` hours (never when None)."""
    end = T0 + timedelta(hours=departs_in_h) if departs_in_h is not None else T0 + timedelta(days=365)
    schedule = FixedSchedule(((T0 - timedelta(hours=1), end),))
    return Vehicle(spec=spec(**changes), schedule=schedule, soc=soc, updated_at=T0)


def setpoint(
    power_kw: float, minutes: float = 600, start_in_min: float = 0, command_id: str = "c1"
) -> Setpoint:
    start = T0 + timedelta(minutes=start_in_min)
    return Setpoint(command_id, power_kw, start, start + timedelta(minutes=minutes))


def at(h: float) -> datetime:
    return T0 + timedelta(hours=h)


# --- physics -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power_kw", "soc0", "battery_kwh", "hours", "soc1", "grid_in_kwh", "grid_out_kwh"),
    [
        # Charging: the battery stores grid energy x sqrt(0.87).
        (-11.0, 0.50, 60.0, 1.0, 0.50 + 11 * ONE_WAY / 60, 11.0, 0.0),
        (-7.4, 0.30, 40.0, 0.5, 0.30 + 3.7 * ONE_WAY / 40, 3.7, 0.0),
        # Discharging: the grid gets stored energy x sqrt(0.87), i.e. the battery gives grid / sqrt(0.87).
        (10.0, 0.80, 50.0, 1.0, 0.80 - 10 / ONE_WAY / 50, 0.0, 10.0),
        (5.0, 0.60, 80.0, 2.0, 0.60 - 10 / ONE_WAY / 80, 0.0, 10.0),
        # Idle.
        (0.0, 0.50, 60.0, 3.0, 0.50, 0.0, 0.0),
    ],
)
def test_soc_follows_the_setpoint_with_efficiency(
    power_kw, soc0, battery_kwh, hours, soc1, grid_in_kwh, grid_out_kwh
):
    v = vehicle(soc0, battery_kwh=battery_kwh, target_soc=0.5)
    assert v.command(setpoint(power_kw), T0) is None
    v.advance(at(hours))
    assert v.soc == pytest.approx(soc1, abs=1e-9)
    assert v.energy_charged_kwh == pytest.approx(grid_in_kwh)
    assert v.energy_discharged_kwh == pytest.approx(grid_out_kwh)


def test_a_round_trip_returns_the_round_trip_efficiency():
    v = vehicle(0.5, battery_kwh=60.0, target_soc=0.2)
    v.command(setpoint(-11.0, minutes=60), T0)
    v.advance(at(1))
    stored = (v.soc - 0.5) * 60
    v.command(setpoint(11.0, minutes=600, start_in_min=60, command_id="c2"), at(1))
    v.advance(at(1) + timedelta(hours=stored * ONE_WAY / 11))  # exactly until back at 0.5
    assert v.soc == pytest.approx(0.5, abs=1e-6)
    assert v.energy_discharged_kwh / v.energy_charged_kwh == pytest.approx(ETA, rel=1e-5)


@pytest.mark.parametrize(
    ("setpoint_kw", "max_charge", "max_discharge", "is_v2g", "applied_kw"),
    [
        (30.0, 11.0, 11.0, True, 11.0),  # clipped to the discharge limit
        (-50.0, 22.0, 11.0, True, -22.0),  # clipped to the charge limit
        (4.0, 11.0, 11.0, True, 4.0),
        (-3.0, 7.4, 7.4, True, -3.0),
        (-3.0, 7.4, 7.4, False, -3.0),  # a non-V2G vehicle may still be told to charge slower
    ],
)
def test_setpoints_are_clipped_to_the_charger_limits(
    setpoint_kw, max_charge, max_discharge, is_v2g, applied_kw
):
    v = vehicle(0.6, max_charge_kw=max_charge, max_discharge_kw=max_discharge, is_v2g=is_v2g)
    assert v.command(setpoint(setpoint_kw), T0) is None
    assert v.power_kw == applied_kw
    assert v.state(at(0.1))["power_kw"] == applied_kw


def test_discharge_stops_exactly_at_min_soc():
    v = vehicle(0.25, battery_kwh=40.0, min_soc=0.2)
    v.command(setpoint(11.0, minutes=600), T0)
    v.advance(at(2))
    assert v.soc == pytest.approx(0.2, abs=1e-12)
    assert v.power_kw == 0.0  # holds: not below min SoC, and no charging asked for
    assert v.energy_discharged_kwh == pytest.approx(0.05 * 40 * ONE_WAY)


def test_charging_stops_at_full_under_a_setpoint_and_at_target_on_its_own():
    v = vehicle(0.95)
    v.command(setpoint(-11.0, minutes=60), T0)
    v.advance(at(0.9))
    assert v.soc == pytest.approx(1.0) and v.power_kw == 0.0
    own = vehicle(0.7, target_soc=0.8)
    own.advance(at(5))
    assert own.soc == pytest.approx(0.8, abs=1e-12) and own.power_kw == 0.0


def test_never_discharges_below_what_departure_needs():
    # 60 kWh, 11 kW: 0.171 SoC/h of charging; departure in 3 h with target 0.8.
    v = vehicle(0.6, departs_in_h=3.0, target_soc=0.8)
    v.command(setpoint(11.0, minutes=600), T0)
    rise = 11 * ONE_WAY / 60
    low = 1.0
    for minute in range(0, 180, 5):
        now = T0 + timedelta(minutes=minute)
        v.advance(now)
        required = 0.8 - rise * (3.0 - minute / 60)
        assert v.soc >= required - 1e-9, f"below the departure curve at +{minute} min"
        low = min(low, v.soc)
    assert low < 0.6 - 0.1  # it did discharge for a while
    v.advance(at(3.0) - timedelta(microseconds=1))
    assert v.soc == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize(
    ("soc", "departs_in_h", "min_soc", "accepted"),
    [
        (0.5, None, 0.2, True),
        (0.2, None, 0.2, False),  # at min SoC
        (0.3, 1.0, 0.2, False),  # 0.8 - 0.171 = 0.629 needed one hour before departure
        (0.7, 1.0, 0.2, True),
    ],
)
def test_a_discharge_command_at_the_floor_is_rejected(soc, departs_in_h, min_soc, accepted):
    v = vehicle(soc, departs_in_h=departs_in_h, min_soc=min_soc, target_soc=0.8)
    reason = v.command(setpoint(5.0), T0)
    assert (reason is None) is accepted
    if not accepted:
        assert reason == domain.REASON_AT_FLOOR


def test_a_late_arrival_charges_flat_out_whatever_the_setpoint():
    v = vehicle(0.3, departs_in_h=2.0, target_soc=0.8)  # cannot even reach 0.8 in 2 h
    v.command(setpoint(-2.0), T0)  # a slow-charge setpoint
    assert v.power_kw == -11.0


def test_a_setpoint_expires_back_to_the_own_schedule():
    v = vehicle(0.5, target_soc=0.8)
    v.command(setpoint(11.0, minutes=30), T0)
    v.advance(at(0.25))
    assert v.power_kw == 11.0 and v.setpoint is not None
    v.advance(at(0.5))
    assert v.setpoint is None and v.power_kw == -11.0  # plugged: charging towards its target
    soc_at_expiry = 0.5 - 5.5 / ONE_WAY / 60
    v.advance(at(1.5))
    assert v.soc == pytest.approx(soc_at_expiry + 11 * ONE_WAY / 60, abs=1e-9)


def test_departure_drops_the_setpoint_and_idles():
    v = vehicle(0.7, departs_in_h=1.0, target_soc=0.6)
    v.command(setpoint(3.0, minutes=600), T0)
    v.advance(at(2))
    assert v.setpoint is None and v.power_kw == 0.0
    assert v.state(at(2))["plugged_in"] is False


def test_a_future_setpoint_waits_for_its_start():
    v = vehicle(0.8, target_soc=0.8)
    v.command(setpoint(11.0, minutes=60, start_in_min=30), T0)
    assert v.power_kw == 0.0
    v.advance(at(0.75))
    assert v.power_kw == 11.0


@pytest.mark.parametrize(
    ("case", "soc", "power_kw", "valid_min", "plugged", "is_v2g", "reason"),
    [
        ("unplugged", 0.5, 5.0, 60, False, True, domain.REASON_NOT_PLUGGED),
        ("expired", 0.5, 5.0, -1, True, True, domain.REASON_EXPIRED),
        ("not V2G", 0.5, 5.0, 60, True, False, domain.REASON_NOT_V2G),
        ("full", 1.0, -5.0, 60, True, True, domain.REASON_FULL),
        ("ok", 0.5, 5.0, 60, True, True, None),
    ],
)
def test_command_outcomes(case, soc, power_kw, valid_min, plugged, is_v2g, reason):
    v = vehicle(soc, is_v2g=is_v2g)
    if not plugged:
        v.schedule = FixedSchedule(((T0 + timedelta(hours=1), T0 + timedelta(hours=2)),))
    sp = Setpoint("c", power_kw, T0 - timedelta(minutes=5), T0 + timedelta(minutes=valid_min))
    assert v.command(sp, T0) == reason, case
    assert v.applied_commands == (1 if reason is None else 0)


def test_state_and_discovery_payloads():
    v = vehicle(0.5, departs_in_h=8.0)
    state = v.state(T0)
    assert state == {
        "vehicle_id": "ev-1", "soc": 0.5, "plugged_in": True, "power_kw": -11.0,
        "timestamp": "2026-11-23T20:00:00.000+00:00", "battery_kwh": 60.0, "target_soc": 0.8,
        "departure_at": "2026-11-24T04:00:00.000+00:00",
    }  # fmt: skip
    found = v.discovery(T0)
    assert {"max_charge_kw", "max_discharge_kw", "is_v2g", "min_soc"} <= found.keys()
    assert found.items() >= state.items()


# --- schedules and fleet generation ---------------------------------------------------


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=PARIS)


MONDAY, SATURDAY = date(2026, 11, 23), date(2026, 11, 28)


@pytest.mark.parametrize(
    ("profile", "day", "hh", "plugged"),
    [
        ("commuter", MONDAY, 3, True),
        ("commuter", MONDAY, 12, False),
        ("commuter", MONDAY, 21, True),
        ("commuter", SATURDAY, 12, True),
        ("captive", MONDAY, 3, True),
        ("captive", MONDAY, 10, False),
        ("captive", MONDAY, 15, False),
        ("captive", MONDAY, 20, True),
        ("captive", SATURDAY, 11, True),
        ("opportunistic", MONDAY, 3, False),  # sessions are between 07:00 and midnight
        ("always", MONDAY, 12, True),
    ],
)
def test_profiles_plug_in_when_expected(profile, day, hh, plugged):
    for n in range(20):
        schedule = Schedule(profile, 1, f"ev-{n}", PARIS)
        assert schedule.plug_state(local(day, hh)).plugged is plugged, f"{profile} ev-{n}"


def test_a_commuter_leaves_in_the_morning_and_says_when():
    for n in range(50):
        state = Schedule("commuter", 3, f"ev-{n}", PARIS).plug_state(local(MONDAY, 2))
        leaves = state.departs_at.astimezone(PARIS)
        assert leaves.date() == MONDAY and 6 * 60 <= leaves.hour * 60 + leaves.minute <= 8 * 60 + 30


def test_friday_evening_to_monday_morning_is_one_session():
    state = Schedule("commuter", 3, "ev-1", PARIS).plug_state(local(date(2026, 11, 27), 22))
    assert state.departs_at.astimezone(PARIS).date() == date(2026, 11, 30)


def test_schedules_survive_daylight_saving_changes():
    for day in (date(2026, 3, 29), date(2026, 10, 25)):  # 23 h and 25 h days in Paris
        for profile in domain.PROFILES:
            windows = Schedule(profile, 5, "ev-1", PARIS).windows(day)
            assert all(start < end for start, end in windows)


def week(seed: int, vehicle_id: str, profile: str) -> list:
    schedule = Schedule(profile, seed, vehicle_id, PARIS)
    return [schedule.windows(MONDAY + timedelta(days=n)) for n in range(7)]


@pytest.mark.parametrize("profile", ["commuter", "captive", "opportunistic"])
def test_schedules_are_deterministic_per_seed(profile):
    assert week(1, "ev-7", profile) == week(1, "ev-7", profile)
    assert week(1, "ev-7", profile) != week(2, "ev-7", profile)
    assert week(1, "ev-7", profile) != week(1, "ev-8", profile)


def test_fleet_generation_is_deterministic_and_plausible():
    now = T0
    fleet = [domain.vehicle_make(9, f"ev-{n:04d}", now) for n in range(2000)]
    again = [domain.vehicle_make(9, f"ev-{n:04d}", now) for n in range(2000)]
    assert [(v.spec, v.soc) for v in fleet] == [(v.spec, v.soc) for v in again]
    assert [v.spec for v in fleet] != [domain.vehicle_make(10, f"ev-{n:04d}", now).spec for n in range(2000)]
    for v in fleet:
        s = v.spec
        assert 40 <= s.battery_kwh <= 80
        if s.charger == "ac":
            assert 7 <= s.max_charge_kw <= 22 and 7 <= s.max_discharge_kw <= 11
        else:
            assert 7.4 <= s.max_charge_kw <= 11 and s.max_discharge_kw == s.max_charge_kw
        assert 0 <= v.soc <= 1 and s.min_soc <= s.target_soc
    shares = Counter(v.spec.profile for v in fleet)
    for name, share in domain.DEFAULT_PROFILE_MIX.items():
        assert shares[name] / len(fleet) == pytest.approx(share, abs=0.04)


def test_profile_mix_follows_the_weights():
    mix = {"captive": 3, "always": 1}
    picks = Counter(domain.profile_pick(4, f"ev-{n}", mix) for n in range(4000))
    assert set(picks) == {"captive", "always"}
    assert picks["always"] / 4000 == pytest.approx(0.25, abs=0.03)


def test_draw_is_fixed_by_its_keys_and_uniform():
    assert domain.draw(1, "c1", "fate") == domain.draw(1, "c1", "fate")
    assert domain.draw(1, "c1", "fate") != domain.draw(2, "c1", "fate")
    values = [domain.draw(1, n) for n in range(10_000)]
    assert min(values) >= 0 and max(values) < 1
    assert sum(v < 0.3 for v in values) / len(values) == pytest.approx(0.3, abs=0.02)


# --- payloads ---------------------------------------------------------------------


GOOD = {"command_id": "c-1", "dispatch_id": "d", "vehicle_id": "ev-1", "signal_type": "FCR", "power_kw": 5.5,
        "start_at": "2026-11-23T20:00:00+00:00", "duration_s": 900, "valid_until": "2026-11-23T20:15:00Z",
        "issued_at": "2026-11-23T19:59:59+00:00"}  # fmt: skip


def test_a_spec_command_parses():
    command = payloads.command_parse(json.dumps(GOOD).encode(), "ev-1")
    assert command.command_id == "c-1" and command.power_kw == 5.5
    assert command.valid_until == datetime(2026, 11, 23, 20, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**GOOD, "command_id": None}).encode(), "command_id"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "command_id"}).encode(), "command_id"),
        (json.dumps({**GOOD, "vehicle_id": "ev-2"}).encode(), "does not match"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "vehicle_id"}).encode(), "does not match"),
        (json.dumps({**GOOD, "power_kw": "5"}).encode(), "power_kw"),
        (json.dumps({**GOOD, "power_kw": True}).encode(), "power_kw"),
        (
            b'{"command_id": "c", "vehicle_id": "ev-1", "power_kw": NaN, "valid_until": "2026-11-23T20:15:00Z"}',
            "power_kw",
        ),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "valid_until"}).encode(),
            "valid_until is missing",
        ),
        (json.dumps({**GOOD, "valid_until": "tomorrow"}).encode(), "valid_until is not ISO"),
        (json.dumps({**GOOD, "valid_until": "2026-11-23T20:15:00"}).encode(), "no UTC offset"),
        (json.dumps({**GOOD, "start_at": 5}).encode(), "start_at"),
    ],
)
def test_malformed_commands_are_refused_with_a_reason(payload, why):
    with pytest.raises(payloads.CommandError, match=why):
        payloads.command_parse(payload, "ev-1")


def test_acks_follow_the_spec():
    now = datetime(2026, 11, 23, 20, 0, 1, 250000, tzinfo=UTC)
    accepted = json.loads(payloads.ack_encode("c-1", "ev-1", None, now))
    assert accepted == {"command_id": "c-1", "vehicle_id": "ev-1", "status": "accepted",
                        "timestamp": "2026-11-23T20:00:01.250+00:00"}  # fmt: skip
    rejected = json.loads(payloads.ack_encode("c-1", "ev-1", "not plugged in", now))
    assert rejected["status"] == "rejected" and rejected["reason"] == "not plugged in"
    assert datetime.fromisoformat(rejected["timestamp"]).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("payload", "request_id", "ids"),
    [
        (b"", None, None),
        (b"garbage", None, None),
        (b"[]", None, None),
        (b'{"request_id": "r1"}', "r1", None),
        (b'{"request_id": 7, "vehicle_ids": ["a", "b"]}', "7", frozenset({"a", "b"})),
    ],
)
def test_requests_are_read_leniently(payload, request_id, ids):
    assert payloads.request_parse(payload) == payloads.Request(request_id, ids)


# --- options ------------------------------------------------------------------------


def test_defaults_follow_the_spec_topics():
    cfg = config.parse([], environ={})
    assert (cfg.command_topic, cfg.ack_topic, cfg.state_topic) == (
        "vehicle/{vehicle_id}/command", "vehicle/{vehicle_id}/ack", "v2g/vehicle/state/{vehicle_id}",
    )  # fmt: skip
    assert cfg.telemetry_request_topic == "v2g/telemetry/request"
    assert cfg.telemetry_response_topic == "v2g/telemetry/response/{vehicle_id}"
    assert cfg.discovery_topic == "v2g/fleet/discovery"
    assert cfg.discovery_response_topic == "v2g/fleet/response/{vehicle_id}"
    assert cfg.lwt_topic == "v2g/vehicle/lwt/sim-demo-ev-0000"  # the fleet's one Last Will, a gateway's
    assert config.parse(["--lwt-topic-prefix", ""], environ={}).lwt_topic == ""
    assert config.parse(["--count", "3"], environ={}).vehicle_ids() == [
        "demo-ev-0000",
        "demo-ev-0001",
        "demo-ev-0002",
    ]
    assert config.parse(["--count", "2", "--first", "10", "--prefix", "x-"], environ={}).vehicle_ids() == [
        "x-0010",
        "x-0011",
    ]


def test_yaml_file_then_environment_then_command_line(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text(
        "count: 50\ndrop-rate: 0.1\nreject_rate: 0.05\nprofiles: {commuter: 1, always: 1}\npassword: from-file\n"
        "ack_latency_ms_min: 5\nack_latency_ms_max: 50\n"
    )
    cfg = config.parse(["--config", str(path), "--count", "7"], environ={})
    assert (cfg.count, cfg.drop_rate, cfg.reject_rate) == (7, 0.1, 0.05)
    assert cfg.profiles == {"commuter": 1.0, "always": 1.0}
    assert cfg.random_latency and (cfg.ack_latency_ms_min, cfg.ack_latency_ms_max) == (5, 50)
    assert cfg.password == "from-file"
    assert config.parse(["--config", str(path)], environ={"V2G_SIM_PASSWORD": "env"}).password == "env"
    assert (
        config.parse(["--config", str(path), "--password", "cli"], environ={"V2G_SIM_PASSWORD": "e"}).password
        == "cli"
    )
    assert "from-file" not in repr(cfg)


@pytest.mark.parametrize(
    ("argv", "yaml_text", "message"),
    [
        (["--count", "0"], None, "--count: must be >= 1"),
        (["--count", "ten"], None, "--count: expected an integer"),
        (["--drop-rate", "1.5"], None, "--drop-rate: must be between 0 and 1"),
        (["--reject-rate", "-0.1"], None, "--reject-rate"),
        (["--drop-rate", "0.6", "--reject-rate", "0.5"], None, "--drop-rate plus --reject-rate"),
        (["--ack-latency-ms-min", "5"], None, "--ack-latency-ms-min and --ack-latency-ms-max go together"),
        (["--ack-latency-ms-min", "50", "--ack-latency-ms-max", "5"], None, "must not be above"),
        (
            ["--ack-latency-ms", "5", "--ack-latency-ms-min", "1", "--ack-latency-ms-max", "9"],
            None,
            "exclude each other",
        ),
        (["--profiles", "commuter=0.5,weekender=0.5"], None, "--profiles: unknown profile 'weekender'"),
        (["--profiles", "commuter"], None, "--profiles: expected name=weight"),
        (["--profiles", "commuter=0"], None, "--profiles: needs at least one profile"),
        (["--url", "http://broker"], None, "--url"),
        (["--timezone", "Mars/Olympus"], None, "--timezone: unknown time zone"),
        (["--command-topic", "vehicle/command"], None, "--command-topic: must contain the {vehicle_id}"),
        (
            ["--command-topic", "vehicle/x{vehicle_id}/command"],
            None,
            "--command-topic: {vehicle_id} must be one whole",
        ),
        (["--ack-topic", "vehicle/+/{vehicle_id}"], None, "--ack-topic: must not contain MQTT wildcards"),
        (["--discovery-topic", "fleet/{vehicle_id}"], None, "--discovery-topic"),
        (["--lwt-topic-prefix", "v2g/#"], None, "--lwt-topic-prefix: no wildcard"),
        (["--ack-qos", "3"], None, "--ack-qos: must be 0, 1 or 2"),
        (["--offline-s", "0"], None, "--offline-s: must be > 0"),
        (["--efficiency", "1.2"], None, "--efficiency"),
        (["--telemetry-interval-s", "nan"], None, "--telemetry-interval-s: must be finite"),
        ([], "dorp_rate: 0.1\n", "unknown option 'dorp_rate'"),
        ([], "drop_rate: lots\n", "drop_rate: expected a number"),
        ([], "- a list\n", "must hold a mapping"),
        ([], "count: [1\n", "not valid YAML"),
    ],
)
def test_bad_options_exit_2_naming_the_option(tmp_path, capsys, argv, yaml_text, message):
    if yaml_text is not None:
        path = tmp_path / "sim.yaml"
        path.write_text(yaml_text)
        argv = ["--config", str(path), *argv]
    with pytest.raises(SystemExit) as exited:
        config.parse(argv, environ={})
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_config_file_is_named(capsys):
    with pytest.raises(SystemExit):
        config.parse(["--config", "/nonexistent/sim.yaml"], environ={})
    assert "--config: cannot read /nonexistent/sim.yaml" in capsys.readouterr().err
