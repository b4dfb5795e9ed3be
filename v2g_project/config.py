"""Typed configuration: the schema of config.yaml and how it is loaded.

Pure module: it never reads ``os.environ`` itself. ``v2g_project.settings``
(the only module that reads the environment) passes the environment in, which
keeps loading testable without monkeypatching.

Precedence, lowest first: defaults < YAML file < ``K_<SECTION>__<KEY>``
environment variables < the conventional ``DATABASE_URL`` and
``CELERY_BROKER_URL`` variables. Any unknown key, wrong type or out-of-range
value raises :class:`ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dj_database_url
import yaml
from kombu.transport import TRANSPORT_ALIASES
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "K_"
ENV_CONFIG_PATH = "V2G_CONFIG"
# Set by Knative / Cloud Run in every container; not ours, never an override.
FOREIGN_K_VARIABLES = frozenset({"K_SERVICE", "K_REVISION", "K_CONFIGURATION"})
DEFAULT_CONFIG_FILE = "config.yaml"

SignalType = Literal["FCR", "aFRR", "mFRR", "MA", "NEBEF", "EcoWatt"]
SIGNAL_TYPES: tuple[str, ...] = typing.get_args(SignalType)
Strategy = Literal["equal", "smart", "lp"]
Fallback = Literal["noop", "balanced", "probabilistic"]
Qos = Annotated[int, Field(ge=0, le=2)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]


class ConfigError(Exception):
    """A configuration problem; the message names every offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- mqtt --------------------------------------------------------------------

MQTT_SCHEMES = {"tcp", "mqtt", "ssl", "mqtts", "ws", "wss"}


class QosConfig(Section):
    command: Qos = 1
    ack: Qos = 1
    telemetry: Qos = 0


class MqttConfig(Section):
    url: str = "tcp://127.0.0.1:1883"
    client_id: str = Field("v2g", min_length=1, max_length=40)
    # The MQTT bridge's own, stable client id: its broker session (clean
    # session off) keeps the QoS 1 acks that arrive while it is down. Empty:
    # "{client_id}-bridge". Several bridges on one broker need one id each.
    bridge_client_id: str = Field("", max_length=100, pattern=r"^(?:[A-Za-z0-9._:-]|\{hostname\})*$")
    username: str = ""
    password: SecretStr = SecretStr("")
    auth_method: Literal["none", "password", "tls"] = "none"
    use_tls: bool = False
    ca_bundle: str = ""
    client_cert: str = ""
    client_key: str = ""
    command_topic: str = "vehicle/{vehicle_id}/command"
    ack_topic: str = "vehicle/+/ack"
    qos: QosConfig = QosConfig()
    lwt_topic: str = "v2g/lwt"
    lwt_payload: str = '{"status": "offline", "client_id": "{client_id}"}'
    lwt_qos: Qos = 1
    lwt_retain: bool = False
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    backoff_ms: Annotated[int, Field(ge=1, le=60_000)] = 200
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0
    max_inflight: Annotated[int, Field(ge=1, le=65_535)] = 1000
    # Non-empty: the bridge connects with MQTT 5 and subscribes to
    # $share/<shared_group>/<topic>, so several bridges in the group split the
    # acks and telemetry (each message goes to one of them). Empty: plain
    # subscriptions (one bridge; a second one would record everything twice,
    # harmlessly but for nothing).
    shared_group: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
            raise ValueError(
                f"expected scheme://host[:port] with scheme one of {', '.join(sorted(MQTT_SCHEMES))}"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError("bad port") from exc
        return value

    @field_validator("command_topic")
    @classmethod
    def _command_topic(cls, value: str) -> str:
        if "{vehicle_id}" not in value:
            raise ValueError("must contain the {vehicle_id} placeholder")
        return value

    @model_validator(mode="after")
    def _auth(self) -> MqttConfig:
        if self.auth_method == "password" and not self.username:
            raise ValueError("auth_method 'password' needs mqtt.username")
        if self.auth_method == "tls" and not (self.client_cert and self.client_key):
            raise ValueError("auth_method 'tls' needs mqtt.client_cert and mqtt.client_key")
        return self

    @property
    def tls(self) -> bool:
        return self.use_tls or urlsplit(self.url).scheme in {"ssl", "mqtts", "wss"}


# --- dispatch ----------------------------------------------------------------


class SmartWeights(Section):
    soc: NonNegFloat = 0.5
    availability: NonNegFloat = 0.3
    fairness: NonNegFloat = 0.2


class SegmentConfig(Section):
    strategy: Strategy | None = None
    weights: SmartWeights | None = None


class DispatchConfig(Section):
    ack_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    default_strategy: Strategy = "equal"
    strategies: dict[SignalType, Strategy] = Field(
        default_factory=lambda: {"FCR": "equal", "aFRR": "equal", "NEBEF": "smart"}
    )
    lp_first: list[SignalType] = Field(default_factory=list)
    fallback: Fallback = "balanced"
    max_fallback_rounds: Annotated[int, Field(ge=0, le=10)] = 2
    enable_soc_constraints: bool = True
    min_soc: Fraction = 0.2
    safe_discharge_floor: Fraction = 0.3
    smart_weights: SmartWeights = SmartWeights()
    segments: dict[str, SegmentConfig] = Field(default_factory=dict)
    publish_expires_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # The sweep (Beat) takes over a round this long after its ack deadline (or an
    # allocation or publish this long after it was due): the worker holding it died.
    sweep_grace_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0


# --- metrics, telemetry, logging --------------------------------------------


class MetricsConfig(Section):
    emission_factor: Annotated[float, Field(ge=0, le=2000)] = 21.7
    prometheus_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    multiproc_dir: str = "var/prometheus"
    kpi_days_exposed: Annotated[int, Field(ge=1, le=366)] = 7
    # A CSV of marginal factors per quarter-hour (timestamp,gco2_per_kwh); empty = the flat factor.
    emission_factor_csv: str = ""


class TelemetryConfig(Section):
    enabled: bool = True
    mode: Literal["push", "pull", "hybrid"] = "push"
    interval_seconds: PositiveInt = 60
    request_topic: str = "v2g/telemetry/request"
    response_topic_prefix: str = "v2g/telemetry/response"
    state_topic_prefix: str = "v2g/vehicle/state"
    discovery_topic: str = "v2g/fleet/discovery"
    discovery_response_prefix: str = "v2g/fleet/response"
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    stale_after_seconds: PositiveInt = 300
    retention_days: PositiveInt = 30
    lwt_topic_prefix: str = "v2g/vehicle/lwt"
    auto_register: bool = False
    discovery_fleet: Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]{1,64}$")] = "discovered"
    prediction_engine: Literal["history", "deterministic"] = "history"
    prediction_history_days: Annotated[int, Field(ge=1, le=90)] = 14

    @field_validator(
        "request_topic",
        "response_topic_prefix",
        "state_topic_prefix",
        "discovery_topic",
        "discovery_response_prefix",
        "lwt_topic_prefix",
    )
    @classmethod
    def _plain_topic(cls, value: str, info: Any) -> str:
        # These are published to or get "/+" appended: a wildcard here would
        # subscribe to (or publish on) something else than intended.
        if "+" in value or "#" in value or value.endswith("/"):
            raise ValueError(f"{value!r}: no MQTT wildcard (+ #) and no trailing /")
        if not value and info.field_name != "lwt_topic_prefix":
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> TelemetryConfig:
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError(
                f"timeout_seconds ({self.timeout_seconds}) must be below "
                f"interval_seconds ({self.interval_seconds})"
            )
        return self


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    backend: Literal["sqlite", "jsonl"] = "sqlite"
    jsonl_path: str = "var/dispatch_log.jsonl"
    max_size_mb: Annotated[int, Field(ge=1, le=100_000)] = 100
    max_backups: Annotated[int, Field(ge=0, le=1000)] = 5
    max_age_days: PositiveInt = 30

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# --- RTE ---------------------------------------------------------------------


Scenario = Literal["steady", "ramp", "burst", "random_walk", "afrr", "fcr_frequency", "replay"]


class RteMockConfig(Section):
    """The mock RTE server (``mode: mock``): what it listens on and what it publishes."""

    address: str = "127.0.0.1:8090"  # host:port, loopback for demos
    client_id: str = "v2g-mock"
    client_secret: str = "v2g-mock-secret"  # a local demo credential, not a secret
    token_ttl_seconds: PositiveInt = 3600
    # The generator scenario the mock publishes as activations (with rteGenerator's ranges).
    scenario: Scenario = "steady"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8090")
        return value


class RteConfig(Section):
    enabled: bool = False
    mode: Literal["mock", "client"] = "mock"
    token_url: str = ""
    api_url: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    poll_interval_seconds: PositiveInt = 60
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    overlap_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    lookback_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 3600.0
    backoff_max_seconds: Annotated[float, Field(ge=1, le=3600)] = 300.0
    fleet_id: str = ""
    mock: RteMockConfig = RteMockConfig()

    @field_validator("token_url", "api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
            raise ValueError("expected an http(s):// URL")
        return value

    @model_validator(mode="after")
    def _client_needs(self) -> RteConfig:
        if self.mode == "client":
            missing = [k for k in ("token_url", "api_url", "client_id") if not getattr(self, k)]
            if not self.client_secret.get_secret_value():
                missing.append("client_secret")
            if missing:
                raise ValueError(f"mode 'client' needs {', '.join(missing)}")
        return self


class RteGeneratorConfig(Section):
    enabled: bool = False
    runner: Literal["process", "beat"] = "process"
    scenario: Scenario = "steady"
    min_interval_seconds: Annotated[float, Field(gt=0)] = 120
    max_interval_seconds: Annotated[float, Field(gt=0)] = 300
    min_duration_seconds: Annotated[float, Field(gt=0)] = 120
    max_duration_seconds: Annotated[float, Field(gt=0)] = 600
    min_power_kw: float = 5.0
    max_power_kw: float = 25.0
    signal_types: list[SignalType] = Field(default_factory=lambda: ["FCR"], min_length=1)
    jitter_pct: Annotated[float, Field(ge=0, le=100)] = 15.0
    seed: int = 42
    replay_file: str = ""
    fleet_id: str = ""

    @model_validator(mode="after")
    def _ranges(self) -> RteGeneratorConfig:
        for low, high in (
            ("min_interval_seconds", "max_interval_seconds"),
            ("min_duration_seconds", "max_duration_seconds"),
            ("min_power_kw", "max_power_kw"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} must not exceed {high}")
        if self.scenario == "replay" and not self.replay_file:
            raise ValueError("scenario 'replay' needs replay_file")
        return self


# --- scheduler, sentry ------------------------------------------------------


class ObjectiveWeights(Section):
    shortfall: NonNegFloat = 1000.0
    degradation: NonNegFloat = 1.0
    fairness: NonNegFloat = 0.1
    overshoot: NonNegFloat = 1.0


class SchedulerConfig(Section):
    slot_duration_minutes: int = 15  # 15, 30 or 60 (checked below; int so env strings convert)
    target_energy_kwh: NonNegFloat = 100.0
    target_profile_kw: list[float] = Field(default_factory=list)
    time_zone: str = "Europe/Paris"
    run_at: str = "12:00"
    weights: ObjectiveWeights = ObjectiveWeights()

    @field_validator("slot_duration_minutes")
    @classmethod
    def _slot(cls, value: int) -> int:
        if value not in (15, 30, 60):
            raise ValueError("must be 15, 30 or 60 (minutes)")
        return value

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("run_at")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
            raise ValueError(f"expected local time HH:MM, got {value!r}")
        return value


class SentryConfig(Section):
    dsn: SecretStr = SecretStr("")
    environment: str = "development"
    traces_sample_rate: Fraction = 0.0
    release: str = ""

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: SecretStr) -> SecretStr:
        # What sentry_sdk.utils.Dsn accepts, checked here so that a bad DSN stops
        # start-up naming the key instead of raising BadDsn from sentry_sdk.init
        # (and without importing the SDK while Sentry is off).
        dsn = value.get_secret_value()
        if not dsn:
            return value
        parts = urlsplit(dsn)
        try:
            parts.port  # noqa: B018 - raises on a bad port
            project_ok = parts.path.rsplit("/", 1)[-1].isdigit()
        except ValueError:
            project_ok = False
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or not parts.username
            or not project_ok
        ):
            raise ValueError("not a Sentry DSN: expected https://<public key>@<host>/<project number>")
        return value


# --- platform sections (not in SPEC §13, needed to run) ---------------------


class DatabaseConfig(Section):
    # Empty: an SQLite file at sqlite_path (the embedded default).
    url: SecretStr = SecretStr("")
    sqlite_path: str = "var/v2g.sqlite3"
    conn_max_age_s: Annotated[int, Field(ge=0, le=3600)] = 60

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        # The parse settings does, here: a bad URL names the key, not a traceback
        # of dj_database_url (the message never holds the URL: it has a password).
        url = value.get_secret_value()
        if url:
            try:
                dj_database_url.parse(url)
            except (ValueError, TypeError) as exc:  # its UnknownSchemeError and ParseError are ValueErrors
                raise ValueError(
                    f"not a database URL ({type(exc).__name__}): expected e.g. "
                    "postgres://user:password@host:5432/name or sqlite:////path/to/file"
                ) from None
        return value


BROKER_TRANSPORTS = frozenset(name.lower() for name in TRANSPORT_ALIASES)


QueueName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


class CeleryQueues(Section):
    """The queue of each class of tasks (v2g_project.queues). Give several
    classes one name to share a queue; give them celery.default_queue to turn
    routing off."""

    dispatch: QueueName = "dispatch"  # allocation, publish, ack collection, fallback, plan slots
    telemetry: QueueName = "telemetry"  # pull rounds, discovery, history purge, profiles
    planning: QueueName = "planning"  # day-ahead plans
    kpis: QueueName = "kpis"  # KPI recomputation and backfills


class CeleryConfig(Section):
    broker_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    result_backend: SecretStr = SecretStr("")  # empty: same as broker_url
    # Used with broker_url "filesystem://" (the embedded demo transport, no server).
    filesystem_dir: str = "var/celery"
    # The queue tasks are sent to and a worker consumes when not told otherwise.
    default_queue: str = Field("celery", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")
    queues: CeleryQueues = CeleryQueues()
    # Messages a worker process reserves beyond the one it runs: 1 keeps a long
    # task from holding back messages another process could run now.
    prefetch_multiplier: Annotated[int, Field(ge=1, le=64)] = 1
    task_time_limit_s: PositiveInt = 300
    task_soft_time_limit_s: PositiveInt = 240
    visibility_timeout_s: PositiveInt = 3600
    # Touched by Beat at every tick (v2g_project.beat); empty: none.
    beat_heartbeat_file: str = "var/run/beat.alive"

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: SecretStr) -> SecretStr:
        # kombu only fails on the first connection (a worker retrying for ever, a
        # web process failing each signal); refuse an unknown transport at start-up.
        # Several URLs separated by ";" are kombu's failover list.
        for url in value.get_secret_value().split(";"):
            scheme = url.partition("://")[0].partition("+")[0].lower()
            if "://" not in url or scheme not in BROKER_TRANSPORTS:
                raise ValueError(
                    "not a Celery broker URL: expected redis://[:password@]host:port/db "
                    f"(or another kombu transport: {', '.join(sorted(BROKER_TRANSPORTS))})"
                )
        return value

    @model_validator(mode="after")
    def _limits(self) -> CeleryConfig:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        return self


# Django's development key: what settings use while web.secret_key is empty
# (debug on). Refused when debug is off, like any key Django calls insecure.
DEV_SECRET_KEY = "django-insecure-v2g-development-only-never-in-production"
# What `manage.py check --deploy` accepts (security.W009): 50 characters, 5 distinct.
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_MIN_UNIQUE = 5


def _origin_problem(origin: str, *, wildcard: bool = False) -> str | None:
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if wildcard and host.startswith("*."):
        host = host[2:]
    if parts.scheme not in ("http", "https") or not host or parts.path or parts.query:
        return f"{origin!r} is not an origin: expected scheme://host[:port], http or https, no path or /"
    return None


class WebConfig(Section):
    # debug comes first: secret_key's validator reads it.
    debug: bool = True
    secret_key: SecretStr = SecretStr("")  # empty: a development key, refused when debug is off
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"])
    health_timeout_s: Annotated[float, Field(gt=0, le=30)] = 2.0
    # Security of the web process; each applies only when debug is false.
    csrf_trusted_origins: list[str] = Field(default_factory=list)
    behind_proxy: bool = False  # trust X-Forwarded-Proto from the TLS-terminating reverse proxy
    ssl_redirect: bool = True
    hsts_seconds: Annotated[int, Field(ge=0, le=63_072_000)] = 31_536_000
    hsts_include_subdomains: bool = True
    hsts_preload: bool = False

    @field_validator("secret_key")
    @classmethod
    def _secret(cls, value: SecretStr, info: Any) -> SecretStr:
        if info.data.get("debug", True):
            return value
        secret = value.get_secret_value()
        if not secret:
            raise ValueError("required when debug is false (set K_WEB__SECRET_KEY or K_WEB__SECRET_KEY_FILE)")
        if secret == DEV_SECRET_KEY or secret.startswith("django-insecure-"):
            raise ValueError("the development secret key cannot be used when debug is false")
        if len(secret) < SECRET_KEY_MIN_LENGTH or len(set(secret)) < SECRET_KEY_MIN_UNIQUE:
            raise ValueError(
                f"must be at least {SECRET_KEY_MIN_LENGTH} characters, {SECRET_KEY_MIN_UNIQUE} of them "
                "different, when debug is false (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(50))')"
            )
        return value

    @field_validator("csrf_trusted_origins")
    @classmethod
    def _csrf_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if problem := _origin_problem(origin, wildcard=True):
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _production(self) -> WebConfig:
        if not self.debug and not self.allowed_hosts:
            raise ValueError("allowed_hosts must not be empty when debug is false")
        return self


# --- api: access to the REST API (README "API access") -----------------------

THROTTLE_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
STATIC_TOKEN_MIN_LENGTH = 16


class ApiConfig(Section):
    # Empty: off. A shared secret for simple set-ups; per-integrator tokens
    # (hashed, scoped, revocable) are issued in the admin instead.
    static_token: SecretStr = SecretStr("")
    static_token_fleets: list[Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]{1,64}$")]] = Field(
        default_factory=list
    )
    throttle_rate: str = "600/min"
    cors_allowed_origins: list[str] = Field(default_factory=list)

    @field_validator("static_token")
    @classmethod
    def _static_token(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret and len(secret) < STATIC_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"must be at least {STATIC_TOKEN_MIN_LENGTH} characters (empty disables the static token)"
            )
        if any(ch.isspace() for ch in secret):
            raise ValueError("must not contain spaces (it travels in an Authorization header)")
        return value

    @field_validator("throttle_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        if not value.strip():
            return ""
        match = THROTTLE_RATE.match(value)
        if not match or int(match.group(1)) == 0:
            raise ValueError("expected N/period with N > 0 and period s, min, hour or day, e.g. 600/min")
        return f"{int(match.group(1))}/{match.group(2)}"

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if problem := _origin_problem(origin):
                raise ValueError(problem)
        return value


class Config(Section):
    mqtt: MqttConfig = MqttConfig()
    dispatch: DispatchConfig = DispatchConfig()
    metrics: MetricsConfig = MetricsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    logging: LoggingConfig = LoggingConfig()
    rte: RteConfig = RteConfig()
    rte_generator: RteGeneratorConfig = Field(default_factory=RteGeneratorConfig, alias="rteGenerator")
    scheduler: SchedulerConfig = SchedulerConfig()
    sentry: SentryConfig = SentryConfig()
    database: DatabaseConfig = DatabaseConfig()
    celery: CeleryConfig = CeleryConfig()
    web: WebConfig = WebConfig()
    api: ApiConfig = ApiConfig()


# --- loading -----------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so the caller sees the model, dict or scalar type."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field(model: type[BaseModel], part: str) -> tuple[str, Any] | None:
    """Find a field by name or alias, case-insensitively: (key to use, annotation)."""
    for name, info in model.model_fields.items():
        if part.lower() in (name.lower(), (info.alias or name).lower()):
            return info.alias or name, info.annotation
    return None


def _annotation_at(loc: tuple) -> Any:
    annotation: Any = Config
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            found = _field(annotation, str(part))
            if found is None:
                return None
            annotation = found[1]
        elif typing.get_origin(annotation) is dict:
            key_type, value_type = typing.get_args(annotation)
            if parts and parts[0] == "[key]":  # pydantic's loc for a bad mapping key
                parts.pop(0)
                annotation = key_type
            else:
                annotation = value_type
        elif typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return None
    return _unwrap(annotation)


def _is_collection(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)) in (list, dict, tuple, set)


def _env_value(raw: str, annotation: Any) -> Any:
    """Turn an environment string into what the field expects.

    Scalars stay strings (pydantic converts "10" or "true" itself, and a
    password of digits stays a string); lists and mappings are read as YAML
    flow (``[FCR, aFRR]``, ``{FCR: lp}``) or, for lists, comma-separated.
    """
    if not _is_collection(annotation):
        return raw
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return raw  # let validation report it against the key
    if typing.get_origin(_unwrap(annotation)) is dict:
        return raw  # a mapping needs the {key: value} form; validation says so
    return [item.strip() for item in text.split(",") if item.strip()]


FILE_SUFFIX = "_FILE"


def _resolve(parts: list[str]) -> tuple[list[str], Any] | str:
    """The key path and annotation that ``K_`` variable parts name, or why not."""
    annotation: Any = Config
    path: list[str] = []
    for part in parts:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            found = _field(annotation, part)
            if found is None:
                where = ".".join(path) or "the top level"
                known = ", ".join(info.alias or name for name, info in annotation.model_fields.items())
                return f"unknown key {part!r} in {where} (known: {known})"
            key, annotation = found
        elif typing.get_origin(annotation) is dict:
            key, annotation = part, typing.get_args(annotation)[1]
        else:
            return f"{'.'.join(path)} has no sub-keys"
        path.append(key)
    return path, annotation


def _secret_from_file(var: str, file_name: str, dotted: str) -> str:
    """The content of a Docker-secret-style file; trailing line breaks dropped.

    Errors name the variable, the key and the file, never the content."""
    if not file_name.strip():
        raise ConfigError(f"{var}: empty; expected the path of a file holding {dotted}")
    try:
        text = Path(file_name).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{var}: cannot read {dotted} from file {file_name}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{var}: the file {file_name} holding {dotted} is not UTF-8 text") from None
    return text.rstrip("\r\n")


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple, str]]:
    """Collect ``K_<SECTION>__<KEY>[__<SUBKEY>]`` variables into a nested dict.

    Returns the overrides and, for error messages, the variable that set each
    key path. Unknown sections or keys raise ConfigError naming the variable.
    Below a mapping keyed by data (``dispatch.strategies``, ``dispatch.segments``)
    the part is taken as the key itself: ``K_DISPATCH__STRATEGIES__aFRR=lp``.

    A secret key (a ``SecretStr``: passwords, URLs, tokens, the DSN) can instead
    be read from a file named by ``K_<SECTION>__<KEY>_FILE`` (Docker secrets:
    ``K_WEB__SECRET_KEY_FILE=/run/secrets/v2g_secret_key``).
    """
    tree: dict[str, Any] = {}
    origins: dict[tuple, str] = {}
    problems: list[str] = []
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX) or var in FOREIGN_K_VARIABLES:
            continue
        parts = var[len(ENV_PREFIX) :].split("__")
        resolved = _resolve(parts)
        from_file = False
        if isinstance(resolved, str) and parts[-1].upper().endswith(FILE_SUFFIX):
            plain_key = _resolve([*parts[:-1], parts[-1][: -len(FILE_SUFFIX)]])
            if not isinstance(plain_key, str):
                if _unwrap(plain_key[1]) is not SecretStr:
                    problems.append(
                        f"{var}: only secret keys can be read from a file; "
                        f"{'.'.join(plain_key[0])} is not one (set {var[: -len(FILE_SUFFIX)]} instead)"
                    )
                    continue
                resolved, from_file = plain_key, True
        if isinstance(resolved, str):
            problems.append(f"{var}: {resolved}")
            continue
        path, annotation = resolved
        dotted = ".".join(path)
        # An empty variable beside a _FILE one is no conflict: the file wins (a
        # compose file may pass K_SENTRY__DSN="" to every container by default).
        earlier = origins.get(tuple(path))
        if from_file:
            if earlier is not None and environ[earlier] != "":
                problems.append(f"{var}: {dotted} is also set by {earlier}; use one of them")
                continue
            try:
                value: Any = _secret_from_file(var, environ[var], dotted)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
        else:
            if earlier is not None:  # the same key in another case, or its _FILE sorted first
                if environ[var] == "" and earlier.upper().endswith(FILE_SUFFIX):
                    continue
                problems.append(f"{var}: {dotted} is also set by {earlier}; use one of them")
                continue
            value = _env_value(environ[var], annotation)
        node = tree
        for depth, key in enumerate(path[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                problems.append(
                    f"{var}: {'.'.join(path[: depth + 1])} is also set as a whole by another variable"
                )
                break
        else:
            if isinstance(node.get(path[-1]), dict):
                problems.append(f"{var}: {dotted} is also set key by key by other variables")
                continue
            node[path[-1]] = value
            origins[tuple(path)] = var
    if problems:
        raise ConfigError("invalid environment override:\n  " + "\n  ".join(problems))
    return tree, origins


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if value is None and isinstance(merged.get(key), Mapping):
            continue  # "section:" with every key commented out: keep the defaults
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    return data


def resolve_path(explicit: str | None, environ: Mapping[str, str], base_dir: Path) -> Path | None:
    """The file to read: -c/--config, else $V2G_CONFIG, else ./config.yaml if present."""
    chosen = explicit or environ.get(ENV_CONFIG_PATH)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            source = "-c/--config" if explicit else ENV_CONFIG_PATH
            raise ConfigError(f"config file {path} (from {source}) does not exist")
        return path
    default = base_dir / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def _redact(value: Any) -> Any:
    """Hide the user:password part of a URL-looking value."""
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return value


def _describe(loc: tuple, path: Path | None, origins: dict[tuple, str]) -> str:
    dotted = ".".join(str(part) for part in loc)
    for length in range(len(loc), 0, -1):
        if loc[:length] in origins:
            return f"{dotted} (from environment {origins[loc[:length]]})"
    return f"{dotted} (in {path})" if path else dotted


def load_config(
    environ: Mapping[str, str],
    *,
    path: Path | None = None,
    explicit_path: str | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Build and validate the configuration, or raise ConfigError naming each bad key."""
    if path is None:
        path = resolve_path(explicit_path, environ, base_dir or Path.cwd())
    # Start from the defaults so that overriding one entry of a mapping
    # (K_DISPATCH__STRATEGIES__aFRR=lp) keeps the other entries.
    data = Config().model_dump(by_alias=True)
    from_file = read_yaml(path) if path else {}
    if "rte_generator" in from_file and "rteGenerator" not in from_file:
        from_file["rteGenerator"] = from_file.pop("rte_generator")
    data = _merge(data, from_file)
    overrides, origins = env_overrides(environ)
    data = _merge(data, overrides)
    # Conventional variables used by every Django/Celery deployment tool.
    for var, section, key in (
        ("DATABASE_URL", "database", "url"),
        ("CELERY_BROKER_URL", "celery", "broker_url"),
    ):
        if environ.get(var):
            data = _merge(data, {section: {key: environ[var]}})
            origins[(section, key)] = var
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            given = error.get("input")
            # Echo only plain values: never a secret, nor a whole section
            # given as a scalar (it may be a URL with a password in it).
            target = _annotation_at(error["loc"])
            plain = target is not None and not (
                target is SecretStr or _is_model(target) or _is_collection(target)
            )
            echo = plain and not isinstance(given, dict) and error["type"] != "extra_forbidden"
            shown = f" (got {_redact(given)!r})" if echo and "input" in error else ""
            lines.append(f"{_describe(error['loc'], path, origins)}: {message}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
