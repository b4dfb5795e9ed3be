"""The MQTT bridge: one long-lived process that receives what vehicles and
platform processes publish and hands it, in batches, to the owning app.

Apps contribute routes through ``settings.MQTT_BRIDGE_ROUTE_PROVIDERS`` (dotted
paths to ``f(config) -> list[Route]``). The paho callback only decodes and
enqueues (it never blocks the network loop); a separate thread drains the
queue and calls each route's batch handler, so one database round trip serves
many messages. A malformed payload is logged with its reason and counted; a
handler that raises is logged and counted; neither stops the bridge.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as paho
from django.db import DatabaseError, close_old_connections
from django.utils.module_loading import import_string
from prometheus_client import Counter, Gauge

from v2g_project import mqtt
from v2g_project.config import Config

log = logging.getLogger("v2g.bridge")

MESSAGES = Counter(
    "mqtt_bridge_messages_total",
    "MQTT messages received by the bridge, by route and outcome (handled, malformed, empty, error, dropped).",
    ["route", "outcome"],
)
# livesum: a restarted bridge must not leave its old depth behind (multiproc.py drops dead processes).
QUEUE_DEPTH = Gauge(
    "mqtt_bridge_queue_depth", "Messages decoded and waiting for their handler.", multiprocess_mode="livesum"
)
PLATFORM_LOST = Counter(
    "mqtt_platform_process_lost_total", "Platform MQTT clients whose Last Will was published."
)

MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Message:
    topic: str
    payload: dict
    received_at: datetime
    duplicate: bool = False  # the broker's DUP flag: a QoS 1 redelivery
    # The broker's RETAIN flag: a stored message replayed because we (re)subscribed,
    # not one published now; received_at is then our subscription time, not its age.
    retain: bool = False


@dataclass(frozen=True)
class Route:
    name: str
    topic: str  # subscription filter, may contain + and #
    handler: Callable[[Sequence[Message]], None]
    qos: int = 1


class MalformedPayload(ValueError):
    pass


def payload_decode(raw: bytes) -> dict:
    """A JSON object, or MalformedPayload saying why not."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise MalformedPayload(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedPayload("payload is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedPayload(f"payload is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise MalformedPayload(f"payload is a JSON {type(value).__name__}, expected an object")
    return value


def platform_lwt_handle(messages: Sequence[Message]) -> None:
    """Another platform process died without disconnecting: say so loudly.

    With ``mqtt.lwt_retain`` the broker replays the latest will at every
    subscription: that loss was reported when it happened, so it is only noted."""
    for message in messages:
        if message.retain:
            log.info(
                "an earlier platform MQTT client loss (retained Last Will): %s",
                message.payload.get("client_id", "unknown client"),
            )
            continue
        PLATFORM_LOST.inc()
        log.warning(
            "platform MQTT client lost (Last Will): %s",
            message.payload.get("client_id", "unknown client"),
            extra={"lwt": message.payload},
        )


def platform_routes(config: Config) -> list[Route]:
    if not config.mqtt.lwt_topic:
        return []
    return [Route("platform_lwt", config.mqtt.lwt_topic, platform_lwt_handle, qos=config.mqtt.lwt_qos)]


def subscription_filter(topic: str, shared_group: str) -> str:
    """What the bridge subscribes to for a route: with a shared group, the MQTT 5
    shared subscription $share/<group>/<topic>, so that the broker gives each
    message to one bridge of the group only."""
    return f"$share/{shared_group}/{topic}" if shared_group else topic


def routes_load(config: Config, providers: Sequence[str]) -> list[Route]:
    routes: list[Route] = []
    for path in providers:
        routes.extend(import_string(path)(config))
    return routes


@dataclass
class Bridge:
    config: Config
    routes: list[Route]
    batch_size: int = 500
    batch_wait_s: float = 0.02
    queue_max: int = 100_000
    retry_for_s: float = 30.0
    _queue: queue.Queue = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _connected: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.queue_max)
        self.handled: dict[str, int] = defaultdict(int)  # by route, logged at stop
        # Shared subscriptions are MQTT 5; messages still arrive on their own
        # topic, so the callbacks below keep matching the plain filters.
        group = self.config.mqtt.shared_group
        self.client = mqtt.client_create(
            self.config.mqtt, "bridge", protocol=paho.MQTTv5 if group else paho.MQTTv311
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        for route in self.routes:
            self.client.message_callback_add(route.topic, self._receiver(route))
        self._worker = threading.Thread(target=self._drain, name="bridge-handler", daemon=True)
        self._network = mqtt.ReceiveLoop(self.client, self.config.mqtt)

    # --- network thread: decode and enqueue only ------------------------------

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        # Subscribing here, not once at start, makes every reconnect resubscribe.
        # "Connected" is reported on the SUBACK, not here: a message published
        # between CONNACK and SUBACK would not reach the bridge.
        if not self.routes:
            log.info("bridge connected; subscribed to nothing")
            self._connected.set()
            return
        group = self.config.mqtt.shared_group
        client.subscribe([(subscription_filter(route.topic, group), route.qos) for route in self.routes])

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        group = self.config.mqtt.shared_group
        topics = [subscription_filter(r.topic, group) for r in self.routes]
        refused = [topic for topic, code in zip(topics, reason_codes, strict=False) if code.is_failure]
        for topic in refused:
            log.error("subscription to %s refused by the broker (check the ACL)", topic)
        log.info("bridge connected; subscribed to %s", ", ".join(topics))
        self._connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("bridge lost the MQTT connection (%s); reconnecting", reason_code)

    def _receiver(self, route: Route):
        def on_message(_client, _userdata, msg) -> None:
            # Only timestamp and enqueue: decoding happens in the handler thread,
            # so this thread (which also sends the PUBACKs) drains the socket fast.
            try:
                self._queue.put_nowait(
                    (route, msg.topic, msg.payload, time.time(), bool(msg.dup), bool(msg.retain))
                )
            except queue.Full:
                MESSAGES.labels(route.name, "dropped").inc()
                log.error("bridge queue full (%d); dropped a message on %s", self.queue_max, msg.topic)

        return on_message

    # --- handler thread: batch and hand off --------------------------------

    def _drain(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._collect()
            QUEUE_DEPTH.set(self._queue.qsize())
            if batch:
                self._deliver(batch)

    def _collect(self) -> list[tuple]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _deliver(self, batch: list[tuple]) -> None:
        by_route: dict[str, list[Message]] = defaultdict(list)
        routes = {}
        for route, topic, raw, received, dup, retain in batch:
            if not raw:
                # A zero-length payload is how MQTT deletes a retained message
                # (a client clearing its birth or will): nothing to record.
                MESSAGES.labels(route.name, "empty").inc()
                log.debug("empty message on %s (a retained message cleared); ignored", topic)
                continue
            try:
                payload = payload_decode(raw)
            except MalformedPayload as exc:
                MESSAGES.labels(route.name, "malformed").inc()
                log.warning("rejected message on %s: %s", topic, exc)
                continue
            by_route[route.name].append(
                Message(topic, payload, datetime.fromtimestamp(received, UTC), dup, retain)
            )
            routes[route.name] = route
        for name, messages in by_route.items():
            if self._handle(routes[name], messages):
                MESSAGES.labels(name, "handled").inc(len(messages))
                self.handled[name] += len(messages)
            else:
                MESSAGES.labels(name, "error").inc(len(messages))

    def _handle(self, route: Route, messages: list[Message]) -> bool:
        """Hand a batch to its route. A database error is retried with backoff for
        up to retry_for_s: the messages are already acknowledged to the broker, so
        giving up at the first blip would lose them. Handlers are idempotent."""
        started, delay = time.monotonic(), 0.2
        while True:
            close_old_connections()  # a connection broken by the last failure is replaced
            try:
                route.handler(messages)
                return True
            except Exception as exc:  # a bad batch must not kill the bridge
                transient = isinstance(exc, DatabaseError)  # a bug would fail again: do not stall on it
                if (
                    not transient
                    or time.monotonic() - started + delay > self.retry_for_s
                    or self._stop.is_set()
                ):
                    log.exception(
                        "route %s failed on a batch of %d message(s); giving up on it",
                        route.name,
                        len(messages),
                    )
                    return False
                log.warning(
                    "route %s failed on a batch of %d message(s); retrying in %.1f s",
                    *(route.name, len(messages), delay),
                    exc_info=True,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Connect and run; raises MqttUnavailable when the broker refuses or is
        unreachable at start (later losses are reconnected by the loop)."""
        self._worker.start()
        self._network.start()
        if not self._connected.wait(self.config.mqtt.connect_timeout_s):
            self._network.stop()
            endpoint = mqtt.endpoint_parse(self.config.mqtt)
            raise mqtt.MqttUnavailable(f"MQTT broker {endpoint.host}:{endpoint.port}: no CONNACK in time")

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def healthy(self) -> bool:
        """Subscribed on a live connection, and the handler thread is running."""
        return self._connected.is_set() and self._worker.is_alive() and not self._stop.is_set()

    def stop(self) -> None:
        """Disconnect cleanly (no Last Will), then finish what was received."""
        self._stop.set()
        self._network.stop()
        self._worker.join(timeout=30)
        close_old_connections()
        # With a shared subscription, how this bridge's share of the load went.
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.handled.items()))
        log.info(
            "bridge stopped; handled %d message(s)%s",
            sum(self.handled.values()),
            f": {counts}" * bool(counts),
        )
