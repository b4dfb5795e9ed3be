"""The MQTT bridge: one long-lived process that receives what vehicles and
platform processes publish and hands it, in batches, to the owning app.

Apps contribute routes through ``settings.MQTT_BRIDGE_ROUTE_PROVIDERS`` (dotted
paths to ``f(config) -> list[Route]``). The paho callback only decodes and
enqueues (it never blocks the network loop); a separate thread drains the
queue and calls each route's batch handler, so one database round trip serves
many messages. A malformed payload is logged with its reason and counted; a
handler that raises is logged and counted; neither stops the bridge.

Nothing acknowledged is lost: a QoS 1 message is acknowledged to the broker
(PUBACK) only once its batch is recorded (or rejected for good), and the
bridge keeps a persistent broker session under a stable client id
(``mqtt.bridge_client_id``), so what arrives while it is down, or what it had
received but not yet recorded when it died, is delivered again when it comes
back. Redeliveries are harmless: every handler is idempotent by message id.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
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
REJECTED = Counter(
    "mqtt_bridge_rejected_total",
    "Messages the bridge refused before their handler, by route and reason "
    "(oversized, not_utf8, not_json, too_deep, not_object).",
    ["route", "reason"],
)
# livesum: a restarted bridge must not leave its old depth behind (multiproc.py drops dead processes).
QUEUE_DEPTH = Gauge(
    "mqtt_bridge_queue_depth", "Messages decoded and waiting for their handler.", multiprocess_mode="livesum"
)
PLATFORM_LOST = Counter(
    "mqtt_platform_process_lost_total", "Platform MQTT clients whose Last Will was published."
)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_DEPTH = 16  # nesting of objects and arrays; vehicles' payloads use 2


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
    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason  # the label of mqtt_bridge_rejected_total


def _nesting(text: str) -> int:
    """The deepest nesting of [ and { outside strings: checked before parsing,
    so a payload of 30,000 brackets costs a scan, not a RecursionError."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def payload_decode(raw: bytes) -> dict:
    """A JSON object, or MalformedPayload saying why not."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise MalformedPayload(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}", "oversized")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("payload is not UTF-8", "not_utf8") from None
    if text.count("[") + text.count("{") > MAX_PAYLOAD_DEPTH and _nesting(text) > MAX_PAYLOAD_DEPTH:
        raise MalformedPayload(f"payload nests deeper than {MAX_PAYLOAD_DEPTH} levels", "too_deep")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedPayload(f"payload is not JSON ({exc.msg} at char {exc.pos})", "not_json") from None
    except ValueError as exc:  # e.g. an integer of over 4,300 digits (int_max_str_digits)
        raise MalformedPayload(f"payload is not acceptable JSON ({str(exc)[:80]})", "not_json") from None
    except RecursionError:  # defence in depth: _nesting should have caught it
        raise MalformedPayload("payload nests too deep", "too_deep") from None
    if not isinstance(value, dict):
        raise MalformedPayload(f"payload is a JSON {type(value).__name__}, expected an object", "not_object")
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
        cfg = self.config.mqtt
        # "{hostname}" makes one id per host or container (replicas of one
        # compose service), stable across restarts of that container.
        self.client_id = (cfg.bridge_client_id or f"{cfg.client_id}-bridge").replace(
            "{hostname}", socket.gethostname()
        )
        # A persistent session under a stable id: the broker keeps the
        # subscriptions and queues QoS 1 acks while the bridge is down; PUBACKs
        # are sent by hand once a message is recorded (see the module doc).
        # Shared subscriptions (mqtt.shared_group) are MQTT 5; messages still
        # arrive on their own topic, so the callbacks below keep matching the
        # plain filters.
        self.client = mqtt.client_create(
            cfg,
            "bridge",
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
            protocol=paho.MQTTv5 if cfg.shared_group else paho.MQTTv311,
        )
        # A message no route takes (a subscription the broker kept in the session
        # from an earlier configuration) is still acknowledged: left unacknowledged
        # it would hold a slot of the broker's in-flight window for ever.
        self.client.on_message = self._unrouted
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        for route in self.routes:
            self.client.message_callback_add(route.topic, self._receiver(route))
        self._worker = threading.Thread(target=self._drain, name="bridge-handler", daemon=True)
        self._network = mqtt.ReceiveLoop(self.client, self.config.mqtt)

    # --- network thread: decode and enqueue only ------------------------------

    def _on_connect(self, client, _userdata, flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        if not flags.session_present:
            log.info("bridge %s: new broker session (nothing was kept for it)", self.client_id)
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

    def _unrouted(self, _client, _userdata, msg) -> None:
        MESSAGES.labels("unrouted", "dropped").inc()
        log.info("message on %s matches no route (a subscription kept from an earlier configuration?)",
                 msg.topic)  # fmt: skip
        if msg.qos:
            self._network.ack_later([(self._network.connection, msg.mid, msg.qos)])

    def _receiver(self, route: Route):
        def on_message(_client, _userdata, msg) -> None:
            # Only timestamp and enqueue: decoding happens in the handler thread,
            # so this thread (which also sends the PUBACKs) drains the socket fast.
            if self._stop.is_set():
                return  # not acknowledged: the broker gives it to the next bridge session
            ack = (self._network.connection, msg.mid, msg.qos) if msg.qos else None
            try:
                self._queue.put_nowait(
                    (route, msg.topic, msg.payload, time.time(), bool(msg.dup), bool(msg.retain), ack)
                )
            except queue.Full:
                # Not acknowledged either: redelivered after the next reconnect.
                MESSAGES.labels(route.name, "dropped").inc()
                log.error("bridge queue full (%d); dropped a message on %s", self.queue_max, msg.topic)

        return on_message

    # --- handler thread: batch and hand off --------------------------------

    def _drain(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._collect()
            QUEUE_DEPTH.set(self._queue.qsize())
            if batch:
                try:
                    self._deliver(batch)
                except Exception:  # a message nobody foresaw must not end this thread
                    log.exception("bridge failed on a batch of %d message(s); dropped", len(batch))
                    for item in batch:
                        MESSAGES.labels(item[0].name, "error").inc()
                    # Acknowledged: a message that broke the bridge once would break it again.
                    self._network.ack_later([item[-1] for item in batch if item[-1] is not None])

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
        """Record a batch, then have its messages acknowledged to the broker; a
        batch not recorded (the bridge stopping while the database is down) is
        left unacknowledged, for the broker to deliver again."""
        by_route: dict[str, list[Message]] = defaultdict(list)
        routes = {}
        acks = [item[-1] for item in batch if item[-1] is not None]
        for route, topic, raw, received, dup, retain, _ack in batch:
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
                REJECTED.labels(route.name, exc.reason).inc()
                log.warning("rejected message on %s: %s", topic, exc)
                continue
            by_route[route.name].append(
                Message(topic, payload, datetime.fromtimestamp(received, UTC), dup, retain)
            )
            routes[route.name] = route
        recorded = True
        for name, messages in by_route.items():
            outcome = self._handle(routes[name], messages)
            if outcome is None:
                recorded = False
            elif outcome:
                MESSAGES.labels(name, "handled").inc(len(messages))
                self.handled[name] += len(messages)
            else:
                MESSAGES.labels(name, "error").inc(len(messages))
        if recorded:
            self._network.ack_later(acks)

    def _handle(self, route: Route, messages: list[Message]) -> bool | None:
        """Hand a batch to its route: True when recorded, False when the handler
        failed for good (a bug: it would fail again; logged, counted), None when
        the database stayed unavailable until the bridge stopped. A database
        error is retried with capped backoff for as long as it lasts: the
        messages are not acknowledged meanwhile, so the broker holds the rest
        (its in-flight window fills and it queues them in the session).
        Handlers are idempotent, so a retry or a redelivery never counts twice."""
        started, delay = time.monotonic(), 0.2
        while True:
            close_old_connections()  # a connection broken by the last failure is replaced
            try:
                route.handler(messages)
                return True
            except DatabaseError:
                if self._stop.is_set():
                    log.warning(
                        "route %s: database still unavailable at stop; %d message(s) left "
                        "unacknowledged for the broker to deliver again",
                        *(route.name, len(messages)),
                    )
                    return None
                level = logging.WARNING if time.monotonic() - started < self.retry_for_s else logging.ERROR
                log.log(
                    level,
                    "route %s: database error on a batch of %d message(s) (for %.0f s); retrying in %.1f s",
                    *(route.name, len(messages), time.monotonic() - started, delay),
                    exc_info=True,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # a bad batch must not kill the bridge
                log.exception(
                    "route %s failed on a batch of %d message(s); giving up on it", route.name, len(messages)
                )
                return False

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
        """Finish what was received, have it acknowledged, then disconnect
        cleanly (no Last Will). What arrives meanwhile is left unacknowledged:
        the broker keeps it in the session for the next start."""
        self._stop.set()
        self._worker.join(timeout=30)
        self._network.stop()
        close_old_connections()
        # With a shared subscription, how this bridge's share of the load went.
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.handled.items()))
        log.info(
            "bridge stopped; handled %d message(s)%s",
            sum(self.handled.values()),
            f": {counts}" * bool(counts),
        )
