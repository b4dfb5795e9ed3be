"""Bridge routes owned by dispatch: vehicle acks."""

from __future__ import annotations

from functools import partial

from dispatch.services import acks_record
from v2g_project.bridge import Route
from v2g_project.config import Config


def routes(config: Config) -> list[Route]:
    topic = config.mqtt.ack_topic
    return [Route("ack", topic, partial(acks_record, topic_filter=topic), qos=config.mqtt.qos.ack)]
