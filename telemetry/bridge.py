"""Bridge routes owned by telemetry."""

from __future__ import annotations

from functools import partial

from telemetry.services import states_record
from v2g_project.bridge import Route
from v2g_project.config import Config


def routes(config: Config) -> list[Route]:
    topic = f"{config.telemetry.state_topic_prefix}/+"
    if not config.telemetry.enabled or config.telemetry.mode == "pull":
        return []
    return [Route("state", topic, partial(states_record, topic_filter=topic), qos=config.mqtt.qos.telemetry)]
