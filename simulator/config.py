"""Simulator options: command line, YAML file (``--config``) and defaults.

Precedence: command line > environment (``V2G_SIM_PASSWORD`` only) > YAML file
> defaults. YAML keys are the option names, with dashes or underscores
(``drop-rate`` or ``drop_rate``); an unknown key is an error, so a typo never
silently runs the default. Every bad value exits with status 2 and a message
naming the option, as argparse does for the command line.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from simulator.domain import DEFAULT_PROFILE_MIX, PROFILES, ROUND_TRIP_EFFICIENCY
from v2g_project.config import MqttConfig, TelemetryConfig

_PLATFORM_MQTT, _PLATFORM_TELEMETRY = MqttConfig(), TelemetryConfig()

PASSWORD_ENV = "V2G_SIM_PASSWORD"
VEHICLE = "{vehicle_id}"


@dataclass(frozen=True)
class SimConfig:
    """Everything one simulator process needs; see ``--help`` for each option."""

    count: int = 100
    first: int = 0
    prefix: str = "demo-ev-"
    url: str = "tcp://127.0.0.1:1883"
    username: str = ""
    password: str = field(default="", repr=False)
    client_id: str = "v2g"
    seed: int | None = None
    ack_latency_ms: float = 0.0
    ack_latency_ms_min: float | None = None
    ack_latency_ms_max: float | None = None
    drop_rate: float = 0.0
    reject_rate: float = 0.0
    silent_rate: float = 0.0
    disconnect_rate: float = 0.0
    offline_s: float = 30.0
    telemetry_interval_s: float = 60.0
    status_interval_s: float = 5.0
    duration_s: float = 0.0
    profiles: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PROFILE_MIX))
    timezone: str = "Europe/Paris"
    min_soc: float = 0.2
    efficiency: float = ROUND_TRIP_EFFICIENCY
    v2g_share: float = 1.0
    # Topic defaults are the platform's own (SPEC §5, §6): one source of truth.
    command_topic: str = _PLATFORM_MQTT.command_topic
    ack_topic: str = _PLATFORM_MQTT.ack_topic.replace("+", "{vehicle_id}")
    state_topic: str = f"{_PLATFORM_TELEMETRY.state_topic_prefix}/{{vehicle_id}}"
    telemetry_request_topic: str = _PLATFORM_TELEMETRY.request_topic
    telemetry_response_topic: str = f"{_PLATFORM_TELEMETRY.response_topic_prefix}/{{vehicle_id}}"
    discovery_topic: str = _PLATFORM_TELEMETRY.discovery_topic
    discovery_response_topic: str = f"{_PLATFORM_TELEMETRY.discovery_response_prefix}/{{vehicle_id}}"
    lwt_topic_prefix: str = _PLATFORM_TELEMETRY.lwt_topic_prefix
    ack_qos: int = 1
    telemetry_qos: int = 0
    ledger: str = ""

    def vehicle_ids(self) -> list[str]:
        """``{prefix}{n:04d}``: the ids the platform's demo fleet registers."""
        return [f"{self.prefix}{n:04d}" for n in range(self.first, self.first + self.count)]

    @property
    def random_latency(self) -> bool:
        return self.ack_latency_ms_min is not None

    @property
    def lwt_topic(self) -> str:
        """Where this fleet's Last Will and birth message go: one topic for all
        its vehicles (one client, a gateway), or "" for none."""
        if not self.lwt_topic_prefix:
            return ""
        return f"{self.lwt_topic_prefix}/sim-{self.prefix}{self.first:04d}"


# --- value parsers: shared by argparse and the YAML file ----------------------


def _number(value: Any, kind: type = float) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise ValueError("must be finite")
    return number


def _int_at_least(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        number = int(_number(value, int))
        if number < low:
            raise ValueError(f"must be >= {low}")
        return number

    return parse


def _float_at_least(low: float, *, strict: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = _number(value)
        if number < low or (strict and number == low):
            raise ValueError(f"must be {'>' if strict else '>='} {low:g}")
        return number

    return parse


def _fraction(value: Any) -> float:
    number = _number(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def _efficiency(value: Any) -> float:
    number = _number(value)
    if not 0 < number <= 1:
        raise ValueError("must be in (0, 1], e.g. 0.87")
    return number


def _qos(value: Any) -> int:
    number = int(_number(value, int))
    if number not in (0, 1, 2):
        raise ValueError("must be 0, 1 or 2")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(_text(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return str(value)


def _profiles(value: Any) -> dict[str, float]:
    """``commuter=0.5,captive=0.3,opportunistic=0.2`` or a YAML mapping."""
    if isinstance(value, str):
        pairs = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, weight = part.partition("=")
            if not sep:
                raise ValueError(f"expected name=weight, got {part!r}")
            pairs.append((name.strip(), weight.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ValueError("expected name=weight,... or a mapping")
    mix: dict[str, float] = {}
    for name, weight in pairs:
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; expected {', '.join(PROFILES)}")
        mix[name] = _float_at_least(0)(weight)
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("needs at least one profile with a positive weight")
    return mix


# --- the options -------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    name: str  # the SimConfig field
    parse: Callable[[Any], Any]
    help: str
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("count", _int_at_least(1), "number of vehicles (default 100)", "N"),
    Option("first", _int_at_least(0), "number of the first vehicle (default 0)", "N"),
    Option("prefix", _text, "vehicle id prefix; ids are {prefix}{n:04d} (default demo-ev-)"),
    Option("url", _text, "MQTT broker, tcp:// ssl:// ws:// wss:// (default tcp://127.0.0.1:1883)"),
    Option("username", _text, "MQTT user name"),
    Option("password", _text, f"MQTT password (better: ${PASSWORD_ENV})"),
    Option("client_id", _text, "MQTT client id prefix; a unique suffix is added (default v2g)"),
    Option("seed", _int_at_least(0), "random seed: same seed, same fleet and decisions (default: random)"),
    Option("ack_latency_ms", _float_at_least(0), "fixed delay before each ack (default 0)", "MS"),
    Option("ack_latency_ms_min", _float_at_least(0), "random ack delay, lower bound (with -max)", "MS"),
    Option("ack_latency_ms_max", _float_at_least(0), "random ack delay, upper bound (with -min)", "MS"),
    Option("drop_rate", _fraction, "share of commands never acked (0-1)", "RATE"),
    Option("reject_rate", _fraction, "share of commands rejected (0-1)", "RATE"),
    Option("silent_rate", _fraction, "share of vehicles that never answer anything (0-1)", "RATE"),
    Option("disconnect_rate", _float_at_least(0), "link losses per vehicle per minute (default 0)", "RATE"),
    Option("offline_s", _float_at_least(0, strict=True), "mean time offline after a link loss (30)", "S"),
    Option("telemetry_interval_s", _float_at_least(0), "state push period per vehicle, 0 = off (60)", "S"),
    Option("status_interval_s", _float_at_least(0), "status line period, 0 = off (default 5)", "S"),
    Option("duration_s", _float_at_least(0), "stop after this long, 0 = until Ctrl-C/SIGTERM", "S"),
    Option("profiles", _profiles, "profile mix (default commuter=0.5,captive=0.3,opportunistic=0.2)", "MIX"),
    Option("timezone", _timezone, "local time of the plug-in schedules (default Europe/Paris)", "TZ"),
    Option("min_soc", _fraction, "vehicles never discharge below this SoC (default 0.2)", "SOC"),
    Option("efficiency", _efficiency, "battery round-trip efficiency (default 0.87)", "ETA"),
    Option("v2g_share", _fraction, "share of vehicles able to discharge (default 1)", "RATE"),
    Option("command_topic", _text, "default vehicle/{vehicle_id}/command", "TOPIC"),
    Option("ack_topic", _text, "default vehicle/{vehicle_id}/ack", "TOPIC"),
    Option("state_topic", _text, "default v2g/vehicle/state/{vehicle_id}", "TOPIC"),
    Option("telemetry_request_topic", _text, "default v2g/telemetry/request", "TOPIC"),
    Option("telemetry_response_topic", _text, "default v2g/telemetry/response/{vehicle_id}", "TOPIC"),
    Option("discovery_topic", _text, "default v2g/fleet/discovery", "TOPIC"),
    Option("discovery_response_topic", _text, "default v2g/fleet/response/{vehicle_id}", "TOPIC"),
    Option("lwt_topic_prefix", _text, "Last Will + birth on PREFIX/sim-{prefix}{first}; '' = off", "PREFIX"),
    Option("ack_qos", _qos, "QoS of acks (default 1)", "QOS"),
    Option("telemetry_qos", _qos, "QoS of state pushes and answers (default 0)", "QOS"),
    Option(
        "ledger",
        _text,
        "append one JSON line per command received and per ack published (default: none)",
        "PATH",
    ),
)
BY_NAME = {option.name: option for option in OPTIONS}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = option.name  # argparse names the type in some messages
    return convert


def parser_make() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Virtual V2G vehicles over MQTT: acks, state pushes, pull and discovery answers.",
        argument_default=argparse.SUPPRESS,  # only what was given, so the YAML file can fill the rest
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file of options (the command line wins)")
    for option in OPTIONS:
        parser.add_argument(
            flag(option.name), dest=option.name, type=_argparse_type(option), help=option.help,
            metavar=option.metavar,
        )  # fmt: skip
    return parser


def _yaml_values(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        parser.error(f"--config: cannot read {path}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        parser.error(f"--config: {path} is not valid YAML: {exc}")
    if not isinstance(data, dict):
        parser.error(f"--config: {path} must hold a mapping of option: value")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_")
        option = BY_NAME.get(name)
        if option is None:
            parser.error(f"--config: {path}: unknown option {key!r}")
        try:
            values[name] = option.parse(raw)
        except ValueError as exc:
            parser.error(f"--config: {path}: {key}: {exc}")
    return values


def _topic_check(parser: argparse.ArgumentParser, cfg: SimConfig) -> None:
    for name in (
        "command_topic",
        "ack_topic",
        "state_topic",
        "telemetry_response_topic",
        "discovery_response_topic",
    ):
        topic = getattr(cfg, name)
        if VEHICLE not in topic:
            parser.error(f"{flag(name)}: must contain the {VEHICLE} placeholder, got {topic!r}")
        if "+" in topic or "#" in topic:
            parser.error(f"{flag(name)}: must not contain MQTT wildcards, got {topic!r}")
    levels = cfg.command_topic.split("/")
    if levels.count(VEHICLE) != 1 or cfg.command_topic.count(VEHICLE) != 1:
        example = SimConfig.command_topic
        parser.error(f"{flag('command_topic')}: {VEHICLE} must be one whole topic level, e.g. {example}")
    for name in ("telemetry_request_topic", "discovery_topic"):
        topic = getattr(cfg, name)
        if not topic or VEHICLE in topic:
            parser.error(f"{flag(name)}: must be a plain topic, got {topic!r}")
    # The fleet's own topic level comes from the prefix, so check the whole topic.
    lwt = cfg.lwt_topic
    if any(c in lwt for c in "+#") or VEHICLE in lwt or lwt.endswith("/"):
        parser.error(f"{flag('lwt_topic_prefix')}: no wildcard, placeholder or trailing /, got {lwt!r}")


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> SimConfig:
    """Options from ``argv`` (default sys.argv[1:]); exits with status 2 on a bad one."""
    parser = parser_make()
    given = vars(parser.parse_args(argv))
    environ = os.environ if environ is None else environ
    values = _yaml_values(parser, given.pop("config")) if "config" in given else {}
    if environ.get(PASSWORD_ENV) and "password" not in given:
        values["password"] = environ[PASSWORD_ENV]
    values.update(given)
    cfg = SimConfig(
        **{name: value for name, value in values.items() if name in {f.name for f in fields(SimConfig)}}
    )

    if (cfg.ack_latency_ms_min is None) != (cfg.ack_latency_ms_max is None):
        parser.error("--ack-latency-ms-min and --ack-latency-ms-max go together")
    if cfg.random_latency:
        if cfg.ack_latency_ms_min > cfg.ack_latency_ms_max:
            parser.error("--ack-latency-ms-min must not be above --ack-latency-ms-max")
        if "ack_latency_ms" in values:
            parser.error("--ack-latency-ms (fixed) and --ack-latency-ms-min/-max (random) exclude each other")
    if cfg.drop_rate + cfg.reject_rate > 1:
        parser.error("--drop-rate plus --reject-rate must not exceed 1")
    if cfg.min_soc > 0.95:
        parser.error("--min-soc: leave some room to charge (at most 0.95)")
    _topic_check(parser, cfg)
    _mqtt_check(parser, cfg)
    if cfg.ledger and not Path(cfg.ledger).resolve().parent.is_dir():
        parser.error(f"--ledger: no directory {str(Path(cfg.ledger).resolve().parent)!r} for {cfg.ledger!r}")
    return cfg


def _mqtt_check(parser: argparse.ArgumentParser, cfg: SimConfig) -> None:
    """Let the platform's own MQTT settings model judge the URL and client id."""
    try:
        mqtt_config(cfg)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = flag(str(error["loc"][0])) if error["loc"] else "--url"
        parser.error(f"{where}: {error['msg']}")


def mqtt_config(cfg: SimConfig) -> MqttConfig:
    """The ``MqttConfig`` for the project's client factory."""
    return MqttConfig(url=cfg.url, username=cfg.username, password=cfg.password, client_id=cfg.client_id)
