"""The configuration schema and loader (v2g_project.config), and config.example.yaml.

Pure tests: no database, no Django settings. Every call passes an explicit
environment mapping; os.environ is never read or patched.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from v2g_project.config import SIGNAL_TYPES, Config, ConfigError, load_config, resolve_path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.yaml"


def plain(value: Any) -> Any:
    """model_dump output with secrets revealed, so secret defaults are compared too."""
    if isinstance(value, SecretStr):
        return ("secret", value.get_secret_value())
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def leaf_paths(tree: Any, prefix: tuple = ()) -> set[tuple]:
    """Key paths to every leaf; a non-empty mapping is walked, anything else is a leaf."""
    if isinstance(tree, dict) and tree:
        paths: set[tuple] = set()
        for key, value in tree.items():
            paths |= leaf_paths(value, (*prefix, key))
        return paths
    return {prefix}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str | None = None, env: dict[str, str] | None = None) -> Config:
    path = write(tmp_path, text, "given.yaml") if text is not None else None
    return load_config(env or {}, path=path, base_dir=tmp_path)


def error_of(tmp_path: Path, text: str | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return str(info.value)


# --- config.example.yaml -----------------------------------------------------


def test_example_loads_to_exactly_the_defaults(tmp_path):
    loaded = load_config({}, path=EXAMPLE, base_dir=tmp_path)

    assert plain(loaded.model_dump()) == plain(Config().model_dump())
    assert loaded == Config()


def test_example_documents_every_key_of_the_schema():
    documented = leaf_paths(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    schema = leaf_paths(Config().model_dump(by_alias=True))

    assert schema - documented == set(), "keys missing from config.example.yaml"
    assert documented - schema == set(), "keys in config.example.yaml unknown to the schema"


def test_example_secrets_are_empty():
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    secrets = [
        data["mqtt"]["password"],
        data["rte"]["client_secret"],
        data["sentry"]["dsn"],
        data["database"]["url"],
        data["celery"]["result_backend"],
        data["web"]["secret_key"],
        data["api"]["static_token"],
    ]

    assert secrets == [""] * 7


def test_example_every_key_line_has_a_comment():
    lines = [
        line
        for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\s+[A-Za-z_]+:\s*\S", line) and not line.lstrip().startswith("#")
    ]
    uncommented = [line for line in lines if " # " not in line]

    assert lines
    assert uncommented == []


def test_example_commented_segments_example_is_valid(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    block = re.search(r"^  # segments:.*?\n((?:  #   .*\n)+)", text, re.M)
    assert block, "commented dispatch.segments example not found"
    body = "\n".join(
        "    " + line[len("  #   ") :].split("#")[0].rstrip() for line in block.group(1).splitlines()
    )

    config = load(tmp_path, "dispatch:\n  segments:\n" + body + "\n")

    (segment,) = config.dispatch.segments.values()
    assert segment.strategy == "lp"
    assert segment.weights is not None


# --- good inputs ---------------------------------------------------------------


def test_no_file_no_environment_gives_defaults(tmp_path):
    assert load_config({}, base_dir=tmp_path) == Config()


def test_empty_file_gives_defaults(tmp_path):
    assert load(tmp_path, "") == Config()


def test_file_values_are_honoured_and_the_rest_defaults(tmp_path):
    config = load(
        tmp_path,
        """
mqtt:
  url: ssl://broker.example.com:8883
  qos: {command: 2}
telemetry:
  mode: hybrid
  interval_seconds: 120
rteGenerator:
  enabled: true
  signal_types: [FCR, aFRR]
scheduler:
  slot_duration_minutes: 30
  run_at: "13:30"
""",
    )

    assert config.mqtt.url == "ssl://broker.example.com:8883"
    assert config.mqtt.tls is True
    assert (config.mqtt.qos.command, config.mqtt.qos.ack) == (2, 1)
    assert (config.telemetry.mode, config.telemetry.interval_seconds) == ("hybrid", 120)
    assert config.telemetry.timeout_seconds == 10.0
    assert config.rte_generator.enabled is True
    assert config.rte_generator.signal_types == ["FCR", "aFRR"]
    assert (config.scheduler.slot_duration_minutes, config.scheduler.run_at) == (30, "13:30")
    assert config.dispatch == Config().dispatch


def test_file_found_as_config_yaml_in_base_dir(tmp_path):
    write(tmp_path, "telemetry:\n  mode: pull\n")

    assert load_config({}, base_dir=tmp_path).telemetry.mode == "pull"


def test_environment_beats_the_file(tmp_path):
    config = load(
        tmp_path, "telemetry:\n  mode: pull\n  interval_seconds: 90\n", {"K_TELEMETRY__MODE": "hybrid"}
    )

    assert config.telemetry.mode == "hybrid"
    assert config.telemetry.interval_seconds == 90


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        ({"K_TELEMETRY__MODE": "pull"}, "telemetry.mode", "pull"),
        ({"K_TELEMETRY__INTERVAL_SECONDS": "300"}, "telemetry.interval_seconds", 300),
        ({"K_TELEMETRY__ENABLED": "false"}, "telemetry.enabled", False),
        ({"K_MQTT__QOS__COMMAND": "2"}, "mqtt.qos.command", 2),
        ({"K_MQTT__LWT_RETAIN": "true"}, "mqtt.lwt_retain", True),
        ({"K_DISPATCH__MIN_SOC": "0.25"}, "dispatch.min_soc", 0.25),
        ({"K_DISPATCH__SMART_WEIGHTS__FAIRNESS": "0.6"}, "dispatch.smart_weights.fairness", 0.6),
        ({"K_SCHEDULER__WEIGHTS__SHORTFALL": "50"}, "scheduler.weights.shortfall", 50.0),
        ({"K_SCHEDULER__TARGET_PROFILE_KW": "10, -5.5,0"}, "scheduler.target_profile_kw", [10.0, -5.5, 0.0]),
        ({"K_LOGGING__LEVEL": "debug"}, "logging.level", "DEBUG"),
        ({"K_SENTRY__TRACES_SAMPLE_RATE": "0.5"}, "sentry.traces_sample_rate", 0.5),
        ({"K_RTEGENERATOR__ENABLED": "1"}, "rte_generator.enabled", True),
        ({"K_RTE_GENERATOR__SEED": "7"}, "rte_generator.seed", 7),
        ({"K_DISPATCH__LP_FIRST": "NEBEF"}, "dispatch.lp_first", ["NEBEF"]),
        (
            {"K_WEB__ALLOWED_HOSTS": "v2g.example.com, localhost"},
            "web.allowed_hosts",
            ["v2g.example.com", "localhost"],
        ),
    ],
)
def test_environment_override(tmp_path, env, attribute, expected):
    value: Any = load(tmp_path, env=env)
    for part in attribute.split("."):
        value = getattr(value, part)

    assert value == expected


def test_nested_environment_override_keeps_sibling_keys(tmp_path):
    qos = load(tmp_path, "mqtt:\n  qos: {ack: 0}\n", {"K_MQTT__QOS__COMMAND": "2"}).mqtt.qos

    assert (qos.command, qos.ack, qos.telemetry) == (2, 0, 0)


@pytest.mark.parametrize(
    "raw",
    ["FCR,aFRR", " FCR , aFRR ", "FCR,aFRR,", "[FCR, aFRR]", '["FCR", "aFRR"]'],
)
def test_list_override_comma_separated_or_yaml_flow(tmp_path, raw):
    config = load(tmp_path, env={"K_RTEGENERATOR__SIGNAL_TYPES": raw})

    assert config.rte_generator.signal_types == ["FCR", "aFRR"]


def test_mapping_entry_override_keeps_the_other_entries(tmp_path):
    config = load(tmp_path, env={"K_DISPATCH__STRATEGIES__aFRR": "lp"})

    assert config.dispatch.strategies == {"FCR": "equal", "aFRR": "lp", "NEBEF": "smart"}


def test_mapping_entry_override_adds_to_the_file_entries(tmp_path):
    config = load(
        tmp_path, "dispatch:\n  strategies: {mFRR: smart}\n", {"K_DISPATCH__STRATEGIES__aFRR": "lp"}
    )

    assert config.dispatch.strategies["mFRR"] == "smart"
    assert config.dispatch.strategies["aFRR"] == "lp"
    assert config.dispatch.strategies["FCR"] == "equal"


def test_segment_override_from_environment(tmp_path):
    config = load(
        tmp_path,
        env={
            "K_DISPATCH__SEGMENTS__buses__STRATEGY": "lp",
            "K_DISPATCH__SEGMENTS__buses__WEIGHTS__SOC": "0.9",
        },
    )

    segment = config.dispatch.segments["buses"]
    assert segment.strategy == "lp"
    assert segment.weights is not None
    assert (segment.weights.soc, segment.weights.fairness) == (0.9, 0.2)


@pytest.mark.parametrize(
    "var", ["K_TELEMETRY__MODE", "k_telemetry__mode", "K_Telemetry__Mode", "K_TELEMETRY__mode"]
)
def test_environment_keys_are_case_insensitive(tmp_path, var):
    assert load(tmp_path, env={var: "pull"}).telemetry.mode == "pull"


@pytest.mark.parametrize("password", ["123456", "0012", "1e3", "true", "null"])
def test_password_of_digits_or_yaml_words_stays_a_string(tmp_path, password):
    config = load(tmp_path, env={"K_MQTT__PASSWORD": password})

    assert config.mqtt.password.get_secret_value() == password


def test_conventional_urls_map_to_database_and_celery(tmp_path):
    config = load(
        tmp_path,
        "database:\n  url: sqlite:///file.db\n",
        {
            "DATABASE_URL": "postgres://v2g:pw@db:5432/v2g",
            "CELERY_BROKER_URL": "redis://redis:6379/1",
            "K_CELERY__BROKER_URL": "redis://other:6379/0",
        },
    )

    assert config.database.url.get_secret_value() == "postgres://v2g:pw@db:5432/v2g"
    assert config.celery.broker_url.get_secret_value() == "redis://redis:6379/1"


def test_empty_conventional_urls_are_ignored(tmp_path):
    config = load(tmp_path, env={"DATABASE_URL": "", "CELERY_BROKER_URL": ""})

    assert config.database.url.get_secret_value() == ""
    assert config.celery.broker_url == Config().celery.broker_url


def test_unrelated_environment_variables_are_ignored(tmp_path):
    env = {"PATH": "/usr/bin", "HOME": "/root", "KUBERNETES_PORT": "tcp://x:443", "V2G_CONFIG": ""}

    assert load(tmp_path, env=env) == Config()


def test_production_web_with_a_long_secret_key(tmp_path):
    key = "pr0duction-Key-" * 4
    web = load(tmp_path, env={"K_WEB__DEBUG": "false", "K_WEB__SECRET_KEY": key}).web

    assert (web.debug, web.secret_key.get_secret_value()) == (False, key)


def test_config_is_frozen():
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance ValidationError
        Config().mqtt.url = "tcp://elsewhere:1883"  # type: ignore[misc]


# --- bad inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqqt:\n  url: tcp://x:1883\n", ["mqqt", "unknown key"]),
        ("telemetry:\n  modee: pull\n", ["telemetry.modee", "unknown key"]),
        ("mqtt:\n  qos: {commnd: 1}\n", ["mqtt.qos.commnd", "unknown key"]),
        ("telemetry:\n  interval_seconds: abc\n", ["telemetry.interval_seconds", "'abc'"]),
        ("telemetry:\n  interval_seconds: 0\n", ["telemetry.interval_seconds", "greater than 0"]),
        ("telemetry:\n  mode: pusj\n", ["telemetry.mode", "'pusj'"]),
        ("telemetry:\n  timeout_seconds: 60\n", ["telemetry", "timeout_seconds", "interval_seconds"]),
        ("mqtt:\n  qos:\n    command: 3\n", ["mqtt.qos.command", "less than or equal to 2"]),
        ("mqtt:\n  lwt_qos: -1\n", ["mqtt.lwt_qos"]),
        ("mqtt:\n  url: http://x\n", ["mqtt.url", "http://x"]),
        ("mqtt:\n  url: tcp://\n", ["mqtt.url"]),
        ("mqtt:\n  url: tcp://host:99999\n", ["mqtt.url", "port"]),
        ("mqtt:\n  command_topic: vehicle/command\n", ["mqtt.command_topic", "{vehicle_id}"]),
        ("mqtt:\n  auth_method: password\n", ["mqtt", "username"]),
        ("mqtt:\n  auth_method: tls\n", ["mqtt", "client_cert"]),
        ("mqtt:\n  client_id: ''\n", ["mqtt.client_id"]),
        ("sentry:\n  traces_sample_rate: 1.5\n", ["sentry.traces_sample_rate", "1.5"]),
        ("dispatch:\n  min_soc: 20\n", ["dispatch.min_soc"]),
        ("dispatch:\n  strategies: {FCR: best}\n", ["dispatch.strategies.FCR", "'best'"]),
        ("dispatch:\n  strategies: {XYZ: lp}\n", ["dispatch.strategies.XYZ", "'XYZ'"]),
        ("dispatch:\n  segments: {a: {strategy: lp, colour: red}}\n", ["dispatch.segments.a.colour"]),
        ("dispatch:\n  smart_weights: {soc: -1}\n", ["dispatch.smart_weights.soc"]),
        ("rteGenerator:\n  min_power_kw: 30\n", ["rteGenerator", "min_power_kw must not exceed"]),
        ("rteGenerator:\n  min_interval_seconds: 500\n", ["rteGenerator", "min_interval_seconds"]),
        ("rteGenerator:\n  min_duration_seconds: 700\n", ["rteGenerator", "min_duration_seconds"]),
        ("rteGenerator:\n  scenario: replay\n", ["rteGenerator", "replay_file"]),
        ("rteGenerator:\n  signal_types: []\n", ["rteGenerator.signal_types"]),
        ("rteGenerator:\n  signal_types: [FCR, XYZ]\n", ["rteGenerator.signal_types", "'XYZ'"]),
        ("scheduler:\n  slot_duration_minutes: 20\n", ["scheduler.slot_duration_minutes", "15, 30 or 60"]),
        ("scheduler:\n  time_zone: Mars/Olympus\n", ["scheduler.time_zone", "Mars/Olympus"]),
        ("scheduler:\n  run_at: '25:00'\n", ["scheduler.run_at", "25:00"]),
        ("logging:\n  level: LOUD\n", ["logging.level"]),
        ("celery:\n  task_soft_time_limit_s: 300\n", ["celery", "task_soft_time_limit_s"]),
        ("web:\n  debug: false\n", ["web", "secret_key", "debug"]),
        ("web:\n  debug: false\n  secret_key: short\n", ["web", "secret_key"]),
        ("mqtt: tcp://x:1883\n", ["mqtt", "dictionary"]),
    ],
)
def test_bad_file_value_names_the_key_and_the_file(tmp_path, text, expected):
    message = error_of(tmp_path, text)

    for fragment in [*expected, "given.yaml"]:
        assert fragment in message


def test_every_bad_key_is_reported_at_once(tmp_path):
    message = error_of(tmp_path, "telemetry:\n  mode: pusj\nmqtt:\n  qos: {command: 3}\nfoo: 1\n")

    assert "telemetry.mode" in message
    assert "mqtt.qos.command" in message
    assert "foo" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"K_FOO": "1"}, ["K_FOO", "'FOO'", "unknown key"]),
        ({"K_FOO__BAR": "1"}, ["K_FOO__BAR", "'FOO'"]),
        ({"K_TELEMETRY__MODEE": "pull"}, ["K_TELEMETRY__MODEE", "'MODEE'", "telemetry"]),
        ({"K_MQTT__QOS__COMMANDS": "1"}, ["K_MQTT__QOS__COMMANDS", "mqtt.qos"]),
        ({"K_TELEMETRY__MODE__X": "1"}, ["K_TELEMETRY__MODE__X", "telemetry.mode", "no sub-keys"]),
        ({"K_TELEMETRY__MODE": "pusj"}, ["telemetry.mode", "K_TELEMETRY__MODE", "'pusj'"]),
        (
            {"K_TELEMETRY__INTERVAL_SECONDS": "abc"},
            ["telemetry.interval_seconds", "K_TELEMETRY__INTERVAL_SECONDS"],
        ),
        ({"K_MQTT__QOS__COMMAND": "3"}, ["mqtt.qos.command", "K_MQTT__QOS__COMMAND"]),
        ({"K_MQTT__URL": "http://x"}, ["mqtt.url", "K_MQTT__URL"]),
        (
            {"K_RTEGENERATOR__SIGNAL_TYPES": "FCR,XYZ"},
            ["rteGenerator.signal_types", "K_RTEGENERATOR__SIGNAL_TYPES"],
        ),
        (
            {"K_RTEGENERATOR__SIGNAL_TYPES": "[FCR,"},
            ["rteGenerator.signal_types", "K_RTEGENERATOR__SIGNAL_TYPES"],
        ),
        (
            {"K_DISPATCH__STRATEGIES__aFRR": "best"},
            ["dispatch.strategies.aFRR", "K_DISPATCH__STRATEGIES__aFRR"],
        ),
        (
            {"K_SENTRY__TRACES_SAMPLE_RATE": "1.5"},
            ["sentry.traces_sample_rate", "K_SENTRY__TRACES_SAMPLE_RATE"],
        ),
        ({"K_WEB__DEBUG": "maybe"}, ["web.debug", "K_WEB__DEBUG"]),
    ],
)
def test_bad_environment_override_names_the_variable(tmp_path, env, expected):
    message = error_of(tmp_path, env=env)

    for fragment in expected:
        assert fragment in message


def test_debug_off_without_secret_key_from_environment(tmp_path):
    message = error_of(tmp_path, env={"K_WEB__DEBUG": "false"})

    assert "web" in message
    assert "secret_key" in message


def test_invalid_yaml_names_the_file(tmp_path):
    message = error_of(tmp_path, "mqtt: [\n")

    assert "not valid YAML" in message
    assert "given.yaml" in message


@pytest.mark.parametrize("text", ["- mqtt\n- dispatch\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    message = error_of(tmp_path, text)

    assert "top level must be a mapping" in message
    assert "given.yaml" in message


def test_missing_file_given_explicitly(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml.*-c/--config.*does not exist"):
        load_config({}, explicit_path=str(tmp_path / "nope.yaml"), base_dir=tmp_path)


def test_missing_file_named_by_v2g_config(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml.*V2G_CONFIG.*does not exist"):
        load_config({"V2G_CONFIG": str(tmp_path / "nope.yaml")}, base_dir=tmp_path)


def test_missing_file_given_as_path(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config({}, path=tmp_path / "nope.yaml", base_dir=tmp_path)


# --- secrets never echoed ---------------------------------------------------------

SECRET = "s3cr3t-Value-42"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        (f"mqtt:\n  password: {{value: {SECRET}}}\n", {}, "mqtt.password"),
        ("mqtt:\n  password: 424242424242\n", {}, "mqtt.password"),
        (f"mqtt:\n  password: [{SECRET}]\n", {}, "mqtt.password"),
        (f"database:\n  url: [postgres://u:{SECRET}@h/db]\n", {}, "database.url"),
        (f"database:\n  url: {{postgres: {SECRET}}}\n", {}, "database.url"),
        (f"celery:\n  broker_url: [redis://:{SECRET}@h/0]\n", {}, "celery.broker_url"),
        (f"rte:\n  client_secret: {{x: {SECRET}}}\n", {}, "rte.client_secret"),
        (f"sentry:\n  dsn: [https://{SECRET}@sentry.example/1]\n", {}, "sentry.dsn"),
        (f"web:\n  debug: false\n  secret_key: {SECRET}\n", {}, "secret_key"),
        (f"mqtt:\n  password: {SECRET}\n  pasword: {SECRET}\n", {}, "mqtt.pasword"),
        (None, {"K_WEB__DEBUG": "false", "K_WEB__SECRET_KEY": SECRET}, "secret_key"),
        (None, {"K_MQTT__PASSWORD": SECRET, "K_MQTT__AUTH_METHOD": "password"}, "username"),
    ],
)
def test_secrets_are_never_echoed(tmp_path, text, env, key):
    message = error_of(tmp_path, text, env)

    assert key in message
    assert SECRET not in message
    assert "424242424242" not in message


# --- resolve_path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("explicit", "env_file", "default_file", "expected"),
    [
        ("explicit.yaml", "env.yaml", True, "explicit.yaml"),
        ("explicit.yaml", None, False, "explicit.yaml"),
        (None, "env.yaml", True, "env.yaml"),
        (None, "env.yaml", False, "env.yaml"),
        (None, None, True, "config.yaml"),
        (None, None, False, None),
    ],
)
def test_resolve_path_precedence(tmp_path, explicit, env_file, default_file, expected):
    for name in ("explicit.yaml", "env.yaml"):
        write(tmp_path, "{}\n", name)
    if default_file:
        write(tmp_path, "{}\n", "config.yaml")
    environ = {"V2G_CONFIG": str(tmp_path / env_file)} if env_file else {}
    chosen = resolve_path(str(tmp_path / explicit) if explicit else None, environ, tmp_path)

    assert chosen == (tmp_path / expected if expected else None)


def test_resolve_path_ignores_a_config_yaml_directory(tmp_path):
    (tmp_path / "config.yaml").mkdir()

    assert resolve_path(None, {}, tmp_path) is None


def test_resolve_path_expands_the_home_directory(tmp_path):
    home_file = Path("~").expanduser() / ".v2g-test-never-exists.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(home_file))):
        resolve_path("~/.v2g-test-never-exists.yaml", {}, tmp_path)


def test_explicit_file_beats_v2g_config_when_loading(tmp_path):
    explicit = write(tmp_path, "telemetry:\n  mode: pull\n", "explicit.yaml")
    named = write(tmp_path, "telemetry:\n  mode: hybrid\n", "named.yaml")
    write(tmp_path, "telemetry:\n  enabled: false\n")
    environ = {"V2G_CONFIG": str(named)}

    assert load_config(environ, explicit_path=str(explicit), base_dir=tmp_path).telemetry.mode == "pull"
    by_env = load_config(environ, base_dir=tmp_path).telemetry
    assert (by_env.mode, by_env.enabled) == ("hybrid", True)


# --- regressions: defects found in review and fixed ---


def test_slot_duration_can_be_overridden_from_environment(tmp_path):
    config = load(tmp_path, env={"K_SCHEDULER__SLOT_DURATION_MINUTES": "30"})

    assert config.scheduler.slot_duration_minutes == 30


@pytest.mark.parametrize(
    "env",
    [
        {"K_MQTT__QOS": "1", "K_MQTT__QOS__COMMAND": "2"},
        {"K_DISPATCH__STRATEGIES": "FCR,lp", "K_DISPATCH__STRATEGIES__aFRR": "lp"},
    ],
)
def test_conflicting_environment_overrides_raise_config_error(tmp_path, env):
    with pytest.raises(ConfigError):
        load(tmp_path, env=env)


def test_time_zone_naming_a_zoneinfo_directory_is_a_config_error(tmp_path):
    message = error_of(tmp_path, "scheduler:\n  time_zone: Europe\n")

    assert "scheduler.time_zone" in message


@pytest.mark.parametrize(
    ("text", "env"),
    [
        (f"database: postgres://u:{SECRET}@h/db\n", {}),
        (f"sentry: https://{SECRET}@sentry.example/1\n", {}),
        (None, {"K_DATABASE": f"postgres://u:{SECRET}@h/db"}),
    ],
)
def test_section_given_as_a_scalar_does_not_echo_secrets(tmp_path, text, env):
    assert SECRET not in error_of(tmp_path, text, env)


# --- api: tokens, throttling, CORS ------------------------------------------------


def test_api_defaults_are_closed():
    api = Config().api

    assert api.static_token.get_secret_value() == ""  # no static token
    assert api.cors_allowed_origins == []  # no CORS
    assert api.throttle_rate == "600/min"


def test_api_keys_from_the_environment(tmp_path):
    config = load(
        tmp_path,
        env={
            "K_API__STATIC_TOKEN": "a-long-enough-static-token",
            "K_API__STATIC_TOKEN_FLEETS": "paris,lyon",
            "K_API__THROTTLE_RATE": "30 / minute",
            "K_API__CORS_ALLOWED_ORIGINS": "https://dash.example.com,http://localhost:3000",
        },
    )

    assert config.api.static_token.get_secret_value() == "a-long-enough-static-token"
    assert config.api.static_token_fleets == ["paris", "lyon"]
    assert config.api.throttle_rate == "30/minute"
    assert config.api.cors_allowed_origins == ["https://dash.example.com", "http://localhost:3000"]


def test_an_empty_throttle_rate_disables_throttling(tmp_path):
    assert load(tmp_path, 'api:\n  throttle_rate: ""\n').api.throttle_rate == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api:\n  throttle_rate: 10/fortnight\n", ["api.throttle_rate", "N/period", "'10/fortnight'"]),
        ("api:\n  throttle_rate: 0/min\n", ["api.throttle_rate"]),
        ("api:\n  throttle_rate: fast\n", ["api.throttle_rate"]),
        ("api:\n  cors_allowed_origins: [dash.example.com]\n", ["api.cors_allowed_origins", "scheme://host"]),
        ("api:\n  cors_allowed_origins: ['https://dash.example.com/']\n", ["api.cors_allowed_origins"]),
        ("api:\n  cors_allowed_origins: ['ftp://dash.example.com']\n", ["api.cors_allowed_origins"]),
        ("api:\n  static_token_fleets: ['paris vans']\n", ["api.static_token_fleets"]),
        ("api:\n  static_token: with a space inside\n", ["api.static_token", "spaces"]),
    ],
)
def test_bad_api_value_names_the_key(tmp_path, text, expected):
    message = error_of(tmp_path, text)

    for fragment in expected:
        assert fragment in message


def test_a_short_static_token_names_the_key_and_is_not_echoed(tmp_path):
    message = error_of(tmp_path, env={"K_API__STATIC_TOKEN": "short-s3cret"})

    assert "api.static_token" in message
    assert "K_API__STATIC_TOKEN" in message
    assert "at least 16 characters" in message
    assert "short-s3cret" not in message


# --- secrets from files (K_<SECTION>__<KEY>_FILE) and production validation ---------

PRODUCTION_KEY = "Pr0duction-only-" + "k3y-" * 10  # >= 50 characters, varied


def secret_paths(model: Any = Config, prefix: tuple = ()) -> list[tuple]:
    """Every SecretStr key of the schema, as a key path."""
    from v2g_project.config import _is_model, _unwrap

    paths = []
    for name, info in model.model_fields.items():
        annotation = _unwrap(info.annotation)
        if annotation is SecretStr:
            paths.append((*prefix, name))
        elif _is_model(annotation):
            paths.extend(secret_paths(annotation, (*prefix, name)))
    return paths


def test_the_schema_has_the_expected_secrets():
    assert set(secret_paths()) >= {
        ("mqtt", "password"),
        ("rte", "client_secret"),
        ("sentry", "dsn"),
        ("database", "url"),
        ("celery", "broker_url"),
        ("web", "secret_key"),
        ("api", "static_token"),
    }


def _file_values() -> dict[tuple, str]:
    return {
        ("mqtt", "password"): "mqtt pässword with spaces",
        ("rte", "client_secret"): "rte-client-secret-0123",
        ("sentry", "dsn"): "https://public@sentry.example/42",
        ("database", "url"): "postgres://v2g:db-pw@db.example:5432/v2g",
        ("celery", "broker_url"): "redis://:redis-pw@redis.example:6379/0",
        ("celery", "result_backend"): "redis://:redis-pw@redis.example:6379/1",
        ("web", "secret_key"): PRODUCTION_KEY,
        ("api", "static_token"): "static-token-0123456789abcdef",
    }


@pytest.mark.parametrize("path", secret_paths(), ids=".".join)
def test_every_secret_key_can_be_read_from_a_file(tmp_path, path):
    value = _file_values()[path]
    secret_file = tmp_path / "secret"
    secret_file.write_text(value + "\n", encoding="utf-8")  # echo > file adds a line break
    var = "K_" + "__".join(part.upper() for part in path) + "_FILE"

    config = load(tmp_path, env={var: str(secret_file)})

    section = getattr(config, path[0])
    assert getattr(section, path[1]).get_secret_value() == value


def test_a_secret_file_keeps_inner_whitespace_and_drops_only_the_final_line_breaks(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(b"  two words \r\n\n")

    config = load(tmp_path, env={"K_MQTT__PASSWORD_FILE": str(secret_file)})

    assert config.mqtt.password.get_secret_value() == "  two words "


def test_production_secret_key_from_a_file(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(PRODUCTION_KEY, encoding="utf-8")

    web = load(tmp_path, env={"K_WEB__DEBUG": "false", "K_WEB__SECRET_KEY_FILE": str(secret_file)}).web

    assert (web.debug, web.secret_key.get_secret_value()) == (False, PRODUCTION_KEY)


def test_a_missing_secret_file_names_the_variable_the_key_and_the_file(tmp_path):
    missing = tmp_path / "run" / "secrets" / "db_url"

    message = error_of(tmp_path, env={"K_DATABASE__URL_FILE": str(missing)})

    assert "K_DATABASE__URL_FILE" in message
    assert "database.url" in message
    assert str(missing) in message
    assert "No such file or directory" in message


def test_an_unreadable_secret_file_is_a_config_error(tmp_path):
    directory = tmp_path / "a-directory"
    directory.mkdir()

    message = error_of(tmp_path, env={"K_SENTRY__DSN_FILE": str(directory)})

    assert "K_SENTRY__DSN_FILE" in message and "sentry.dsn" in message
    assert "Is a directory" in message


def test_a_secret_file_that_is_not_text_is_a_config_error(tmp_path):
    secret_file = tmp_path / "binary"
    secret_file.write_bytes(b"\xff\xfe\x00secret")

    message = error_of(tmp_path, env={"K_API__STATIC_TOKEN_FILE": str(secret_file)})

    assert "api.static_token" in message and "not UTF-8" in message


def test_an_empty_secret_file_variable_is_a_config_error(tmp_path):
    message = error_of(tmp_path, env={"K_MQTT__PASSWORD_FILE": ""})

    assert "K_MQTT__PASSWORD_FILE" in message and "mqtt.password" in message


def test_only_secret_keys_are_read_from_files(tmp_path):
    path = write(tmp_path, "push\n", "mode")

    message = error_of(tmp_path, env={"K_TELEMETRY__MODE_FILE": str(path)})

    assert "K_TELEMETRY__MODE_FILE" in message
    assert "only secret keys" in message and "telemetry.mode" in message


def test_a_key_whose_name_ends_in_file_is_still_a_plain_key(tmp_path):
    config = load(tmp_path, env={"K_RTEGENERATOR__REPLAY_FILE": "signals.csv"})

    assert config.rte_generator.replay_file == "signals.csv"


def test_a_secret_set_both_directly_and_from_a_file_is_refused(tmp_path):
    secret_file = write(tmp_path, "from-the-file", "pw")

    message = error_of(
        tmp_path, env={"K_MQTT__PASSWORD": "from-the-env", "K_MQTT__PASSWORD_FILE": str(secret_file)}
    )

    assert "K_MQTT__PASSWORD" in message and "K_MQTT__PASSWORD_FILE" in message
    assert "use one" in message
    assert "from-the-file" not in message and "from-the-env" not in message


@pytest.mark.parametrize("plain", ["K_SENTRY__DSN", "k_sentry__dsn"])  # sorted before or after
def test_an_empty_variable_beside_a_secret_file_is_no_conflict(tmp_path, plain):
    dsn_file = write(tmp_path, "https://key@sentry.example/7\n", "dsn")

    config = load(tmp_path, env={plain: "", "K_SENTRY__DSN_FILE": str(dsn_file)})

    assert config.sentry.dsn.get_secret_value() == "https://key@sentry.example/7"


@pytest.mark.parametrize(
    ("env_key", "read_from_file"), [("K_WEB__SECRET_KEY", False), ("K_WEB__SECRET_KEY_FILE", True)]
)
def test_production_refuses_the_development_secret_key(tmp_path, env_key, read_from_file):
    from v2g_project.config import DEV_SECRET_KEY

    value = DEV_SECRET_KEY
    if read_from_file:
        value = str(write(tmp_path, DEV_SECRET_KEY + "\n", "secret_key"))

    message = error_of(tmp_path, env={"K_WEB__DEBUG": "false", env_key: value})

    assert f"web.secret_key (from environment {env_key})" in message
    assert "development secret key" in message
    assert DEV_SECRET_KEY not in message


@pytest.mark.parametrize(
    "key",
    [
        "django-insecure-" + "a-generated-looking-but-insecure-key-0123456789",
        "0123456789" * 3,  # too short
        "ab" * 40,  # long but only two different characters
    ],
)
def test_production_refuses_keys_django_calls_insecure(tmp_path, key):
    message = error_of(tmp_path, env={"K_WEB__DEBUG": "false", "K_WEB__SECRET_KEY": key})

    assert "web.secret_key (from environment K_WEB__SECRET_KEY)" in message
    assert key not in message


def test_development_keeps_working_without_a_secret_key(tmp_path):
    assert load(tmp_path, env={"K_WEB__DEBUG": "true"}).web.secret_key.get_secret_value() == ""


@pytest.mark.parametrize(
    ("var", "secret"),
    [
        ("K_WEB__SECRET_KEY_FILE", "too-short-s3cret"),
        ("K_API__STATIC_TOKEN_FILE", "has a s3cret space"),
        ("K_DATABASE__URL_FILE", "postgres://u:s3cret-pw@db/v2g\n\nextra"),
    ],
)
def test_a_bad_secret_read_from_a_file_is_never_echoed(tmp_path, var, secret):
    secret_file = write(tmp_path, secret, "secret")
    env = {var: str(secret_file), "K_WEB__DEBUG": "false"}
    if var != "K_WEB__SECRET_KEY_FILE":
        env["K_WEB__SECRET_KEY"] = PRODUCTION_KEY
    if var == "K_DATABASE__URL_FILE":
        env["K_DATABASE__CONN_MAX_AGE_S"] = "-1"  # an error elsewhere, so the message is printed

    message = error_of(tmp_path, env=env)

    assert "s3cret" not in message
    assert PRODUCTION_KEY not in message


def test_production_needs_allowed_hosts(tmp_path):
    message = error_of(
        tmp_path,
        env={"K_WEB__DEBUG": "false", "K_WEB__SECRET_KEY": PRODUCTION_KEY, "K_WEB__ALLOWED_HOSTS": "[]"},
    )

    assert "web" in message and "allowed_hosts" in message


@pytest.mark.parametrize("origin", ["v2g.example.com", "https://v2g.example.com/admin", "ftp://x.example"])
def test_bad_csrf_trusted_origin_names_the_key(tmp_path, origin):
    message = error_of(tmp_path, env={"K_WEB__CSRF_TRUSTED_ORIGINS": f"[{origin}]"})

    assert "web.csrf_trusted_origins" in message


def test_csrf_trusted_origins_accept_a_subdomain_wildcard(tmp_path):
    origins = ["https://v2g.example.com", "https://*.example.org:8443"]

    config = load(tmp_path, env={"K_WEB__CSRF_TRUSTED_ORIGINS": ",".join(origins)})

    assert config.web.csrf_trusted_origins == origins


# --- every key, a bad value: start-up stops naming it ------------------------------
#
# The key list comes from the schema itself (and config.example.yaml documents
# exactly those keys, see above): a key added to v2g_project/config.py is
# tested here without being listed.

WRONG_TYPE = {"a": ["mapping"]}  # what no scalar or list key accepts


def schema_leaves() -> dict[str, Any]:
    """Every leaf key of the configuration, dotted as in config.yaml, with its
    field (a pydantic FieldInfo, or the value type of a mapping's entry)."""
    from pydantic import BaseModel

    leaves: dict[str, Any] = {}

    def walk(model: type[BaseModel], default: BaseModel, prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{prefix}{info.alias or name}"
            value = getattr(default, name)
            if isinstance(value, BaseModel):
                walk(type(value), value, key + ".")
            elif isinstance(value, dict) and value:
                value_type = typing.get_args(info.annotation)[1]
                for entry in value:
                    leaves[f"{key}.{entry}"] = value_type
            else:
                leaves[key] = info

    walk(Config, Config(), "")
    return leaves


def bad_strings(field: Any) -> list[str]:
    """Values, as an environment variable gives them, that the field must refuse."""
    from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
    from pydantic.fields import FieldInfo

    annotation, metadata = (field.annotation, field.metadata) if isinstance(field, FieldInfo) else (field, [])
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata = [*metadata, *(m for extra in more for m in getattr(extra, "metadata", [extra]))]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation)
    if origin is list:
        inner = bad_strings(typing.get_args(annotation)[0])
        return ["[unclosed", *inner[:1]]
    if origin is dict:
        return ["not-a-mapping"]
    values = []
    if origin is typing.Literal:
        values.append("no-such-choice")
    elif annotation is bool:
        values.append("maybe")
    elif annotation in (int, float):
        values.append("not-a-number")
        if annotation is int:
            values.append("1.5")
    for constraint in metadata:
        if isinstance(constraint, Ge):
            values.append(str(constraint.ge - 1))
        elif isinstance(constraint, Gt):
            values.append(str(constraint.gt))
        elif isinstance(constraint, Le):
            values.append(str(constraint.le + 1))
        elif isinstance(constraint, Lt):
            values.append(str(constraint.lt))
        elif isinstance(constraint, MinLen) and constraint.min_length > 0:
            values.append("")
        elif isinstance(constraint, MaxLen):
            values.append("x" * (constraint.max_length + 1))
        elif getattr(constraint, "pattern", None):
            values.append("not valid!/")
    return values


# Strings whose validity a validator decides, not the type: a value each refuses.
VALIDATED_STRINGS = {
    "mqtt.url": "http://broker.example",
    "mqtt.command_topic": "vehicle/command",
    "telemetry.request_topic": "v2g/#",
    "telemetry.response_topic_prefix": "v2g/+/response",
    "telemetry.state_topic_prefix": "v2g/state/",
    "telemetry.discovery_topic": "",
    "telemetry.discovery_response_prefix": "v2g/#",
    "telemetry.lwt_topic_prefix": "v2g/+",
    "rte.token_url": "ftp://rte.example/token",
    "rte.api_url": "not a url",
    "rte.mock.address": "no-port",
    "scheduler.time_zone": "Mars/Olympus_Mons",
    "scheduler.run_at": "25:00",
    "scheduler.slot_duration_minutes": "20",
    "api.static_token": "short",
    "api.throttle_rate": "10/fortnight",
    # Were accepted, then a traceback at start-up (database, Sentry) or a failure at
    # the first connection (broker), naming no key.
    "database.url": "postgres://v2g:pw@db.example:port/v2g",
    "celery.broker_url": "redis-ish://127.0.0.1:6379/0",
    "sentry.dsn": "https://sentry.example/42",
}
LEAVES = schema_leaves()
ENV_CASES = [
    (key, value)
    for key, field in LEAVES.items()
    for value in ([VALIDATED_STRINGS[key]] if key in VALIDATED_STRINGS else []) + bad_strings(field)
]


def env_var(key: str) -> str:
    return "K_" + "__".join(
        part if "." in key and part in SIGNAL_TYPES else part.upper() for part in key.split(".")
    )


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_a_value_of_the_wrong_type_in_the_file_names_the_key(tmp_path, key):
    *sections, name = key.split(".")
    default = Config().model_dump(by_alias=True)
    for section in sections:
        default = default[section]
    wrong = "a string" if isinstance(default[name], dict) else WRONG_TYPE
    tree: dict = {name: wrong}
    for section in reversed(sections):
        tree = {section: tree}

    message = error_of(tmp_path, yaml.safe_dump(tree))

    assert f"\n  {key}" in message and "(in " in message, message


@pytest.mark.parametrize(("key", "value"), ENV_CASES, ids=[f"{k}={v[:20]!r}" for k, v in ENV_CASES])
def test_a_bad_environment_value_names_the_key_and_the_variable(tmp_path, key, value):
    var = env_var(key)

    message = error_of(tmp_path, env={var: value})

    assert f"  {key}" in message and var in message, message


def test_every_key_refuses_some_value_from_the_environment():
    """The keys without a value to refuse are plain text (names, paths, topics
    of the platform's own): anything is valid there but the wrong type, which
    only a file can give (tested above)."""
    from pydantic.fields import FieldInfo

    untested = {key for key in LEAVES if key not in {k for k, _ in ENV_CASES}}
    assert all(
        isinstance(LEAVES[k], FieldInfo) and LEAVES[k].annotation in (str, SecretStr) for k in untested
    )
    assert len(ENV_CASES) > len(LEAVES)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"file": "telemetry:\n  interval_seconds: [60]\n"}, "telemetry.interval_seconds (in "),
        (
            {"DATABASE_URL": "postgres://v2g:pw@db.example:port/v2g"},
            "database.url (from environment DATABASE_URL)",
        ),
    ],
    ids=["file", "environment"],
)
def test_a_real_start_up_stops_with_exit_code_2_naming_the_key(tmp_path, given, expected):
    """What the processes do with the loader's error: manage.py (like celery and
    the bridge, through the same settings) prints it and exits 2, no traceback."""
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    env = subprocess_env(DATABASE_URL="", CELERY_BROKER_URL="", V2G_CONFIG="")
    args = []
    if "file" in given:
        args = ["-c", str(write(tmp_path, given["file"]))]
    else:
        env.update(given)
    run = subprocess.run(
        [sys.executable, "manage.py", *args, "check"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert run.returncode == 2, run.stderr
    assert expected in run.stderr
    assert "Traceback" not in run.stderr and "pw@" not in run.stderr
