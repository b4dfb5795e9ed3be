"""The one MQTT client factory: every process (workers, bridge, health check,
simulator through ``client_create``) builds its paho client here, from the
``mqtt`` config section.

- paho-mqtt 2.x with CallbackAPIVersion.VERSION2;
- a client id unique per process (two clients with one id kick each other off);
- TCP_NODELAY on the socket (a command/ack exchange otherwise takes tens of ms);
- in-flight window raised from paho's 20 (which caps a client at 1-2k msg/s);
- TLS 1.2 minimum with hostname verification when TLS is on, credentials and
  Last Will set before connect, reconnect with backoff inside paho's loop.

In Celery workers, ``publisher()`` lazily creates one connected client per
process *after* fork; ``reset_after_fork`` runs in ``worker_process_init``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from v2g_project.config import ConfigError, MqttConfig

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"tcp": 1883, "mqtt": 1883, "ssl": 8883, "mqtts": 8883, "ws": 80, "wss": 443}


class MqttUnavailable(ConnectionError):
    """The broker could not be reached or refused us. Never carries credentials."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    transport: str  # "tcp" or "websockets"
    tls: bool
    path: str


def endpoint_parse(cfg: MqttConfig) -> Endpoint:
    parts = urlsplit(cfg.url)
    scheme = parts.scheme
    return Endpoint(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or DEFAULT_PORTS[scheme],
        transport="websockets" if scheme in ("ws", "wss") else "tcp",
        tls=cfg.tls,
        path=parts.path or "/mqtt",
    )


def client_id_make(prefix: str, role: str) -> str:
    host = socket.gethostname().split(".")[0][:16]
    return f"{prefix}-{role}-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _nodelay(_client: paho.Client, _userdata: object, sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # websocket wrappers may not expose it
        log.debug("TCP_NODELAY not settable on %r", sock)


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt for a passphrase on the terminal.
    raise ConfigError("mqtt.client_key: the private key is encrypted; give an unencrypted PEM key")


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"mqtt.{key}: cannot read {path}: {exc.strerror}") from None


def _tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """The TLS settings of every client; a bad file raises ConfigError naming
    its key (mqtt.ca_bundle, mqtt.client_cert, mqtt.client_key), not OpenSSL's
    bare "No such file or directory"."""
    if cfg.ca_bundle:
        _readable("ca_bundle", cfg.ca_bundle)
    try:
        context = ssl.create_default_context(cafile=cfg.ca_bundle or None)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"mqtt.ca_bundle: {cfg.ca_bundle} holds no usable PEM CA certificate ({exc.reason or exc})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.client_cert:
        _readable("client_cert", cfg.client_cert)
        if cfg.client_key:
            _readable("client_key", cfg.client_key)
        try:
            context.load_cert_chain(cfg.client_cert, cfg.client_key or None, password=_no_passphrase)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"mqtt.client_cert, mqtt.client_key: {cfg.client_cert} and {cfg.client_key or '(no key)'} "
                f"are not a PEM certificate and its unencrypted private key ({exc.reason or exc})"
            ) from None
    return context


def tls_check(cfg: MqttConfig) -> None:
    """Load the configured TLS files once, at a process's start-up, so that a
    bad path stops it with the key named rather than failing every connection
    later. Raises ConfigError; nothing to do when TLS is off."""
    if cfg.tls:
        _tls_context(cfg)


def tls_check_or_exit(cfg: MqttConfig) -> None:
    """``tls_check`` for a process's start-up (worker, bridge): a bad file stops
    it as a bad configuration value does (settings.py), the key named, exit 2."""
    try:
        tls_check(cfg)
    except ConfigError as exc:
        sys.stderr.write(f"v2g: {exc}\n")
        raise SystemExit(2) from None


def client_create(
    cfg: MqttConfig,
    role: str,
    *,
    will: bool = True,
    client_id: str | None = None,
    protocol: int = paho.MQTTv311,
    clean_session: bool = True,
    manual_ack: bool = False,
) -> paho.Client:
    """A configured, not yet connected client for ``role`` (e.g. "worker", "bridge").

    ``clean_session=False`` (with a stable ``client_id``) asks the broker to keep
    the session, subscriptions and undelivered QoS 1 messages, while the client
    is away; ``manual_ack=True`` leaves each QoS 1 PUBACK to ``client.ack``."""
    endpoint = endpoint_parse(cfg)
    client_id = client_id or client_id_make(cfg.client_id, role)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        transport=endpoint.transport,
        reconnect_on_failure=True,
        clean_session=None if protocol == paho.MQTTv5 else clean_session,
        manual_ack=manual_ack,
    )
    if protocol == paho.MQTTv5:
        # MQTT 5 has no clean-session flag: a kept session is clean_start=False
        # at CONNECT plus a session expiry (paho keeps both for its reconnects).
        client._v2g_clean_start = clean_session
    if endpoint.transport == "websockets":
        client.ws_set_options(path=endpoint.path)
    client.on_socket_open = _nodelay
    client.max_inflight_messages_set(cfg.max_inflight)
    client.max_queued_messages_set(0)  # unbounded: never drop a setpoint silently
    client.connect_timeout = cfg.connect_timeout_s
    client.reconnect_delay_set(
        min_delay=max(1, cfg.backoff_ms // 1000),
        max_delay=max(2, cfg.backoff_ms * 2**cfg.max_retries // 1000),
    )
    if endpoint.tls:
        client.tls_set_context(_tls_context(cfg))
    if cfg.auth_method == "password" or cfg.username:
        client.username_pw_set(cfg.username, cfg.password.get_secret_value() or None)
    if will and cfg.lwt_topic:
        # "{client_id}" in the payload names who died (str.format would trip on JSON braces).
        payload = cfg.lwt_payload.replace("{client_id}", client_id)
        client.will_set(cfg.lwt_topic, payload, qos=cfg.lwt_qos, retain=cfg.lwt_retain)
    return client


# How long the broker keeps an MQTT 5 client's session while it is away: the
# same 7 days as persistent_client_expiration in deploy/mosquitto/*.conf.
SESSION_EXPIRY_S = 7 * 24 * 3600


def connect_args(client: paho.Client) -> dict:
    """Extra arguments of ``client.connect`` for an MQTT 5 client created with
    ``clean_session=False``: clean_start off and a session expiry."""
    if getattr(client, "_v2g_clean_start", True):
        return {}
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return {"clean_start": False, "properties": properties}


def connect(client: paho.Client, cfg: MqttConfig, *, timeout_s: float | None = None) -> None:
    """Connect, start the network loop and wait for CONNACK; raise MqttUnavailable."""
    endpoint = endpoint_parse(cfg)
    connected = threading.Event()
    outcome: dict[str, str] = {}
    previous = client.on_connect

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            outcome["error"] = str(reason_code)
        connected.set()
        if previous:
            previous(c, userdata, flags, reason_code, properties)

    client.on_connect = on_connect
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=cfg.keepalive_s, **connect_args(client))
    except ssl.SSLCertVerificationError as exc:
        raise MqttUnavailable(
            f"MQTT broker {where}: TLS certificate rejected ({exc.verify_message})"
        ) from None
    except ssl.SSLError as exc:
        raise MqttUnavailable(f"MQTT broker {where}: TLS handshake failed ({exc.reason})") from None
    except OSError as exc:
        raise MqttUnavailable(f"MQTT broker {where} unreachable: {exc.strerror or exc}") from None
    client.loop_start()
    if not connected.wait(timeout_s or cfg.connect_timeout_s):
        client.loop_stop()
        raise MqttUnavailable(f"MQTT broker {where}: no CONNACK within {timeout_s or cfg.connect_timeout_s}s")
    client.on_connect = previous
    if "error" in outcome:
        client.disconnect()
        client.loop_stop()
        raise MqttUnavailable(f"MQTT broker {where} refused the connection: {outcome['error']}")


def disconnect(client: paho.Client) -> None:
    """Clean disconnect (sends DISCONNECT, so the Last Will is not fired)."""
    client.disconnect()
    client.loop_stop()


def probe(cfg: MqttConfig, timeout_s: float) -> None:
    """Connect and disconnect once; used by /readyz. Raises MqttUnavailable."""
    client = client_create(cfg, "health", will=False)
    connect(client, cfg, timeout_s=timeout_s)
    disconnect(client)


# --- a network loop for receivers ----------------------------------------------


def _has_data(sock) -> bool:
    if getattr(sock, "pending", None) and sock.pending():  # bytes already inside the TLS layer
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class ReceiveLoop:
    """Runs a client's network loop in a thread, reading every packet waiting on
    the socket at each wake-up.

    paho's own loop (loop_start) reads one packet per select() when the client
    has nothing in flight, as a receiver like the bridge does: at 10,000 acks
    that overhead, not the work done with them, was the bridge's bottleneck.
    This loop uses paho's documented external-loop calls (loop_read,
    loop_write, loop_misc) and reconnects with capped exponential backoff;
    subscriptions belong in on_connect, so they are renewed on each reconnect.

    Manual acknowledgement (a client made with ``manual_ack=True``): another
    thread hands the (connection, mid, qos) of messages it has recorded to
    :meth:`ack_later`; this thread alone writes the PUBACKs, and only on the
    connection the message came in on. A message id belongs to one connection:
    after a reconnect the broker redelivers what was not acknowledged, possibly
    under a reused id, so a PUBACK carried over would acknowledge another message.
    """

    def __init__(self, client: paho.Client, cfg: MqttConfig, *, max_burst: int = 5000) -> None:
        self.client = client
        self.cfg = cfg
        self.max_burst = max_burst
        # Which connection a message arrived on; only this thread changes it
        # (on each connect), and on_message reads it from this thread too.
        self.connection = 0
        self._acks: collections.deque[tuple[int, int, int]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-receive", daemon=True)

    def start(self) -> None:
        """Connect (raising MqttUnavailable) and start the loop thread."""
        endpoint = endpoint_parse(self.cfg)
        try:
            self.client.connect(
                endpoint.host, endpoint.port, keepalive=self.cfg.keepalive_s, **connect_args(self.client)
            )
        except ssl.SSLError as exc:
            raise MqttUnavailable(
                f"MQTT broker {endpoint.host}:{endpoint.port}: TLS failed ({exc.reason})"
            ) from None
        except OSError as exc:
            where = f"{endpoint.host}:{endpoint.port}"
            raise MqttUnavailable(f"MQTT broker {where} unreachable: {exc.strerror or exc}") from None
        self.connection += 1
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send the PUBACKs handed over so far, disconnect cleanly (DISCONNECT
        sent: no Last Will) and end the thread."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout_s)
        self._wake_r.close()
        self._wake_w.close()

    def ack_later(self, acks: Sequence[tuple[int, int, int]]) -> None:
        """Acknowledge these (connection, mid, qos) from the network thread (any thread may call)."""
        if acks:
            self._acks.extend(acks)
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (buffer full) or closing
            self._wake_w.send(b"\0")

    def _acks_send(self) -> None:
        acks, client = self._acks, self.client
        while acks:
            connection, mid, qos = acks.popleft()
            if connection == self.connection and client.socket() is not None:
                client.ack(mid, qos)
            # else: an older connection's message; the broker redelivers it (DUP)
            # and it is recorded idempotently and acknowledged then.

    def _run(self) -> None:
        delay, max_delay = 0.5, max(2.0, self.cfg.backoff_ms * 2**self.cfg.max_retries / 1000)
        client, wake = self.client, self._wake_r
        while not self._stop.is_set():
            sock = client.socket()
            if sock is None:
                try:
                    client.reconnect()
                    self.connection += 1
                    delay = 0.5
                except OSError as exc:  # includes TLS errors
                    log.warning("MQTT reconnect failed (%s); next try in %.1f s", exc.strerror or exc, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, max_delay)
                continue
            try:
                wlist = [sock] if client.want_write() else []
                readable, _, _ = select.select([sock, wake], wlist, [], 0.25)
            except (OSError, ValueError):  # closed under us: paho notices below
                readable = []
            if wake in readable:
                with contextlib.suppress(OSError):  # drained (BlockingIOError)
                    while wake.recv(4096):
                        pass
            self._acks_send()
            if sock in readable or (getattr(sock, "pending", None) and sock.pending()):
                for _ in range(self.max_burst):
                    if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is not sock:
                        break
                    if not _has_data(sock):
                        break
            if client.socket() is not None:
                if client.want_write():
                    client.loop_write()
                client.loop_misc()
        if client.socket() is not None:
            self._acks_send()
            deadline = time.monotonic() + 2.0
            while client.want_write() and client.socket() is not None and time.monotonic() < deadline:
                client.loop_write()
            client.disconnect()


# --- one publisher per worker process ----------------------------------------

_publisher: paho.Client | None = None
_publisher_pid: int | None = None
_publisher_lock = threading.Lock()


def publisher(cfg: MqttConfig | None = None) -> paho.Client:
    """This process's connected publishing client, created on first use after fork."""
    global _publisher, _publisher_pid
    with _publisher_lock:
        if _publisher is None or _publisher_pid != os.getpid():
            if cfg is None:
                from django.conf import settings

                cfg = settings.V2G.mqtt
            client = client_create(cfg, "worker")
            connect(client, cfg)
            _publisher, _publisher_pid = client, os.getpid()
        return _publisher


def reset_after_fork() -> None:
    """Forget a client inherited from the parent; its socket and thread are not ours."""
    global _publisher, _publisher_pid
    _publisher, _publisher_pid = None, None


def publisher_close() -> None:
    global _publisher, _publisher_pid
    with _publisher_lock:
        if _publisher is not None and _publisher_pid == os.getpid():
            disconnect(_publisher)
        _publisher, _publisher_pid = None, None


def publish_wait(client: paho.Client, topic: str, payload: bytes | str, qos: int, timeout_s: float) -> None:
    """Publish and wait for the broker's PUBACK (QoS>0). Not proof of delivery to
    the vehicle: only the vehicle's own ack proves that."""
    info = client.publish(topic, payload, qos=qos)
    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        # NO_CONN: paho keeps a QoS>0 message queued and sends it on reconnect;
        # the caller's retry may then deliver it twice, which the command id
        # makes harmless on the vehicle side.
        raise MqttUnavailable(f"publish to {topic} failed: {paho.error_string(info.rc)}")
    try:
        info.wait_for_publish(timeout=timeout_s)
    except (RuntimeError, ValueError) as exc:
        raise MqttUnavailable(f"publish to {topic} failed: {exc}") from None
    if not info.is_published():
        raise MqttUnavailable(f"publish to {topic} not acknowledged by the broker within {timeout_s}s")
