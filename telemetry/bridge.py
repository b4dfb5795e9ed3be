"""Bridge routes owned by telemetry: pushed states, pull answers, discovery
answers and vehicles' Last Wills."""

from __future__ import annotations

from functools import partial

from telemetry.services import discovery_record, pull_answers_record, states_record, vehicles_offline_record
from v2g_project.bridge import Route
from v2g_project.config import Config


def routes(config: Config) -> list[Route]:
    cfg, qos = config.telemetry, config.mqtt.qos.telemetry
    if not cfg.enabled:
        return []
    found = []
    if cfg.mode != "pull":
        topic = f"{cfg.state_topic_prefix}/+"
        found.append(Route("state", topic, partial(states_record, topic_filter=topic), qos=qos))
    # Pull answers are listened to in every mode: a manual round (telemetry_poll)
    # works in push mode too, and an answer with no request is just a state.
    topic = f"{cfg.response_topic_prefix}/+"
    found.append(Route("telemetry_pull", topic, partial(pull_answers_record, topic_filter=topic), qos=qos))
    topic = f"{cfg.discovery_response_prefix}/+"
    handler = partial(
        discovery_record, topic_filter=topic, auto_register=cfg.auto_register, fleet_id=cfg.discovery_fleet
    )
    found.append(Route("discovery", topic, handler, qos=qos))
    if cfg.lwt_topic_prefix:
        topic = f"{cfg.lwt_topic_prefix}/+"
        # A Last Will is rare and matters: QoS 1 whatever the telemetry QoS.
        found.append(Route("vehicle_lwt", topic, partial(vehicles_offline_record, topic_filter=topic), qos=1))
    return found
