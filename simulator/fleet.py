"""The fleet on MQTT: one client for every vehicle, one dispatcher thread.

Why this shape (10,000 vehicles in one process on 2 cores):
- one paho client subscribed to ``vehicle/+/command`` (and the two
  broadcasts), never one per vehicle: 10,000 clients would mean 10,000
  sockets, keepalives and threads;
- paho's network thread only hands each message to a queue; a single
  dispatcher thread owns every vehicle, so vehicle state needs no locks and
  the order of events is the order of arrival;
- the same thread runs a heap of timers (delayed acks, state pushes, link
  losses, status lines) instead of a thread or ``threading.Timer`` per
  vehicle or per ack.

Behaviour per command, in order: not one of ours -> ignored; unreadable ->
counted as malformed, ignored; silent vehicle or vehicle offline -> no
answer; already seen (QoS 1 redelivery) -> the same ack bytes again, applied
once; drop rate -> never acked; reject rate -> rejected; otherwise the
vehicle model decides (accepted, or rejected with its reason) and the ack
leaves after the configured latency.

Ledger (``--ledger PATH``): one JSON line appended per command received
(``{"event": "command", "command_id", "vehicle_id", "at", "duplicate"}``,
before any decision, so redeliveries and commands to silent or offline
vehicles are there too) and per ack handed to the MQTT client
(``{"event": "ack", "command_id", "vehicle_id", "status", "at"}``, a repeated
ack included). Written by the fleet itself, it is the vehicles' side of the
story whatever happens to the broker or the platform: the reliability tests
compare it with the database.

Presence: the fleet's client is a gateway for all its vehicles. It sets a
retained Last Will naming them on ``lwt_topic_prefix/sim-{prefix}{first}``
and, on every (re)connect, publishes a retained birth message on the same
topic, which replaces a will the broker still holds from a lost connection.
A clean stop deletes the retained message (empty payload) and sends no will:
its vehicles then go stale on the platform instead of offline.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import queue
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from simulator import payloads
from simulator.config import VEHICLE, SimConfig, mqtt_config
from simulator.domain import Setpoint, Vehicle, draw, rng, vehicle_make
from v2g_project import mqtt

log = logging.getLogger(__name__)

REASON_SIMULATED = "rejected by the simulator (reject rate)"
SEEN_MAX = 100_000  # command ids remembered for de-duplication (redeliveries come within seconds)
_DROPPED = b""  # a command this fleet chose never to ack
_PENDING = None  # an ack waiting for its latency
_STOP = object()
# The platform's MQTT bridge rejects larger payloads (v2g_project.bridge.MAX_PAYLOAD_BYTES):
# a will naming more vehicles than fit (about 4,000) would be refused, so none is set.
PRESENCE_MAX_BYTES = 64 * 1024


@dataclass
class Counters:
    """What the status line reports. Written by the dispatcher thread only."""

    commands: int = 0  # readable commands for our vehicles, duplicates included
    acks: int = 0  # ack messages sent, rejects and re-sent duplicates included
    rejects: int = 0
    drops: int = 0  # commands deliberately never acked (drop rate)
    duplicates: int = 0  # redelivered command ids (applied once, acked identically)
    malformed: int = 0  # unreadable commands, ignored
    silent: int = 0  # commands to vehicles that never answer
    offline: int = 0  # commands and acks lost while a vehicle's link was down
    states: int = 0  # state pushes
    pull_requests: int = 0
    pull_answers: int = 0
    discovery_requests: int = 0
    discovery_answers: int = 0
    disconnects: int = 0  # link losses (disconnect rate)
    errors: int = 0  # handler bugs caught so the fleet keeps running


@dataclass(eq=False)
class SimVehicle:
    """A vehicle model plus what the transport needs: its topics and link state."""

    vehicle: Vehicle
    index: int
    silent: bool
    ack_topic: str
    state_topic: str
    pull_topic: str
    discovery_topic: str
    offline_until: float | None = None


class Timers:
    """A heap of (due, seq, function, args) on the monotonic clock."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = itertools.count()

    def push(self, due: float, function: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), function, args))

    def wait_s(self, now: float, cap: float) -> float:
        return cap if not self._heap else min(cap, max(0.0, self._heap[0][0] - now))

    def pop_due(self, now: float) -> list[tuple[Callable[..., None], tuple]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, _, function, args = heapq.heappop(self._heap)
            due.append((function, args))
        return due

    def __len__(self) -> int:
        return len(self._heap)


class Fleet:
    """N simulated vehicles behind one MQTT client.

    ``clock`` gives the simulated wall time (aware UTC) used by the vehicle
    model; timers run on the monotonic clock. Start with :meth:`start`, end
    with :meth:`stop`; :meth:`call` runs a function on the dispatcher thread
    (to read vehicle state consistently).
    """

    def __init__(
        self, cfg: SimConfig, *, clock: Callable[[], datetime] | None = None, out: TextIO | None = None
    ):
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)  # printed, so replayable
        self.counters = Counters()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._out = out or sys.stdout
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._timers = Timers()
        self._seen: OrderedDict[str, bytes | None] = OrderedDict()
        self._thread = threading.Thread(target=self._run, name="sim-dispatcher", daemon=True)
        self._subscribed = threading.Event()
        self._stopping = False
        self._client = None
        # Line-buffered: every line is on disk once written, whatever stops us after.
        self._ledger = open(cfg.ledger, "a", buffering=1, encoding="utf-8") if cfg.ledger else None  # noqa: SIM115
        self.lwt_topic = cfg.lwt_topic
        levels = cfg.command_topic.split("/")
        self._command_levels = len(levels)
        self._command_index = levels.index(VEHICLE)
        self._command_filter = "/".join("+" if level == VEHICLE else level for level in levels)

        now = self._clock()
        tz = ZoneInfo(cfg.timezone)
        ids = cfg.vehicle_ids()
        silent_count = round(cfg.silent_rate * len(ids))
        silent = set(sorted(ids, key=lambda vid: draw(self.seed, vid, "silent"))[:silent_count])
        self.vehicles: dict[str, SimVehicle] = {}
        for index, vid in enumerate(ids):
            vehicle = vehicle_make(
                self.seed, vid, now, mix=cfg.profiles, tz=tz, min_soc=cfg.min_soc,
                efficiency=cfg.efficiency, v2g_share=cfg.v2g_share,
            )  # fmt: skip
            self.vehicles[vid] = SimVehicle(
                vehicle=vehicle,
                index=index,
                silent=vid in silent,
                ack_topic=cfg.ack_topic.replace(VEHICLE, vid),
                state_topic=cfg.state_topic.replace(VEHICLE, vid),
                pull_topic=cfg.telemetry_response_topic.replace(VEHICLE, vid),
                discovery_topic=cfg.discovery_response_topic.replace(VEHICLE, vid),
            )
        self.silent_count = len(silent)
        self._offline_count = 0

    # --- lifecycle ---------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect, subscribe and start the timers; raise mqtt.MqttUnavailable."""
        cfg = self.cfg
        mcfg = mqtt_config(cfg)
        client = mqtt.client_create(mcfg, "sim", will=False)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_disconnect = self._on_disconnect
        client.message_callback_add(self._command_filter, self._enqueue(self._on_command))
        client.message_callback_add(cfg.telemetry_request_topic, self._enqueue(self._on_pull))
        client.message_callback_add(cfg.discovery_topic, self._enqueue(self._on_discovery))
        if self.lwt_topic and not self._will_set(client):
            print(
                f"sim: {len(self.vehicles)} vehicles do not fit in one Last Will "
                f"({PRESENCE_MAX_BYTES} bytes); none set",
                file=sys.stderr,
                flush=True,
            )
            self.lwt_topic = ""
        self._client = client
        self._thread.start()
        try:
            mqtt.connect(client, mcfg, timeout_s=timeout_s)
        except mqtt.MqttUnavailable:
            self._inbox.put(_STOP)
            raise
        if not self._subscribed.wait(timeout_s):
            self._inbox.put(_STOP)
            mqtt.disconnect(client)
            raise mqtt.MqttUnavailable(f"the broker did not confirm the subscriptions within {timeout_s}s")
        self.call(self._timers_start)
        first, last = cfg.vehicle_ids()[0], cfg.vehicle_ids()[-1]
        where = mqtt.endpoint_parse(mcfg)
        self._print(
            f"sim ready vehicles={cfg.count} ids={first}..{last} silent={self.silent_count} "
            f"seed={self.seed} broker={where.host}:{where.port} lwt={self.lwt_topic or 'off'}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the dispatcher, let queued acks leave, disconnect cleanly."""
        if self._stopping:
            return
        self._stopping = True
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join(timeout_s)
        client = self._client
        if client is not None:
            if self.lwt_topic:
                self._presence_clear(client)
            deadline = time.monotonic() + 2.0
            while client.want_write() and time.monotonic() < deadline:  # queued acks still leaving
                time.sleep(0.01)
            mqtt.disconnect(client)
        if self._ledger is not None:
            self._ledger.close()
        self._print(self.status_line("sim stopped"))

    def call(self, function: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Run ``function`` on the dispatcher thread and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = function()
            finally:
                done.set()

        self._inbox.put((run, ()))
        if not done.wait(timeout_s):
            raise TimeoutError("the dispatcher did not answer")
        return box.get("value")

    # --- paho callbacks (network thread): hand over, nothing else ------------

    def _enqueue(self, handler: Callable[[str, bytes], None]) -> Callable:
        put = self._inbox.put

        def on_message(_client, _userdata, message) -> None:
            put((handler, (message.topic, message.payload)))

        return on_message

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            return
        # Here rather than after connect(): paho calls this again on every reconnect.
        cfg = self.cfg
        client.subscribe(
            [(self._command_filter, 1), (cfg.telemetry_request_topic, 1), (cfg.discovery_topic, 1)]
        )
        if self.lwt_topic:
            client.publish(self.lwt_topic, self._presence(online=True), qos=1, retain=True)

    def _on_disconnect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if not self._stopping:
            print(f"sim: broker connection lost ({reason_code}); reconnecting", file=sys.stderr, flush=True)
            if self.lwt_topic:
                self._will_set(client)  # the next connection's will, dated before it starts

    # --- presence: Last Will and birth message ------------------------------------

    def _presence(self, *, online: bool) -> bytes:
        return payloads.presence_encode(
            self.lwt_topic.rsplit("/", 1)[-1], list(self.vehicles), online=online, now=self._clock()
        )

    def _will_set(self, client) -> bool:
        """Set the retained Last Will (before connecting); False when too large."""
        will = self._presence(online=False)
        if len(will) > PRESENCE_MAX_BYTES:
            return False
        client.will_set(self.lwt_topic, will, qos=1, retain=True)
        return True

    def _presence_clear(self, client) -> None:
        """Delete the retained birth message: a clean stop leaves nothing behind."""
        try:
            client.publish(self.lwt_topic, b"", qos=1, retain=True).wait_for_publish(2.0)
        except (RuntimeError, ValueError) as exc:  # not connected: the broker keeps the birth
            print(f"sim: retained presence on {self.lwt_topic} not cleared ({exc})", file=sys.stderr)

    # --- the dispatcher thread ------------------------------------------------

    def _run(self) -> None:
        inbox, timers, monotonic = self._inbox, self._timers, time.monotonic
        while True:
            try:
                item = inbox.get(timeout=timers.wait_s(monotonic(), 0.5))
            except queue.Empty:
                item = None
            handled = 0
            while item is not None:  # work through what is queued, in batches
                if item is _STOP:
                    return
                self._safely(*item)
                handled += 1
                if handled % 256 == 0 and timers.wait_s(monotonic(), 1.0) == 0:
                    break  # timers due (delayed acks, pushes): serve them between batches
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    item = None
            for function, args in timers.pop_due(monotonic()):
                self._safely(function, args)

    def _safely(self, function: Callable[..., None], args: tuple) -> None:
        try:
            function(*args)
        except Exception:
            self.counters.errors += 1
            log.exception("simulator handler failed")

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        self._client.publish(topic, payload, qos=qos)

    # --- commands ----------------------------------------------------------

    def _on_command(self, topic: str, payload: bytes) -> None:
        levels = topic.split("/")
        if len(levels) != self._command_levels:
            return
        sim = self.vehicles.get(levels[self._command_index])
        if sim is None:
            return  # another fleet's vehicle: not ours to answer
        counters = self.counters
        vehicle_id = sim.vehicle.spec.vehicle_id
        try:
            command = payloads.command_parse(payload, vehicle_id)
        except payloads.CommandError as exc:
            counters.malformed += 1
            log.debug("malformed command on %s: %s", topic, exc)
            return
        counters.commands += 1
        command_id = command.command_id
        if self._ledger is not None:
            self._ledger_write("command", command_id, vehicle_id, duplicate=command_id in self._seen)
        if sim.silent:
            counters.silent += 1
            return
        if sim.offline_until is not None:
            counters.offline += 1
            return
        if command_id in self._seen:
            counters.duplicates += 1
            ack = self._seen[command_id]
            if ack:  # sent before: the same bytes again; dropped or still pending: nothing
                self._ack_publish(sim, command_id, ack, count_reject=False)
            return
        cfg = self.cfg
        fate = draw(self.seed, command_id, "fate")
        if fate < cfg.drop_rate:
            counters.drops += 1
            self._remember(command_id, _DROPPED)
            return
        now = self._clock()
        if fate < cfg.drop_rate + cfg.reject_rate:
            reason = REASON_SIMULATED
        else:
            setpoint = Setpoint(command_id, command.power_kw, command.start_at or now, command.valid_until)
            reason = sim.vehicle.command(setpoint, now)
        if cfg.random_latency:
            low, high = cfg.ack_latency_ms_min, cfg.ack_latency_ms_max
            latency_ms = low + (high - low) * draw(self.seed, command_id, "latency")
        else:
            latency_ms = cfg.ack_latency_ms
        if latency_ms <= 0:
            ack = payloads.ack_encode(command_id, vehicle_id, reason, now)
            self._remember(command_id, ack)
            self._ack_publish(sim, command_id, ack, count_reject=True)
        else:
            self._remember(command_id, _PENDING)
            self._timers.push(time.monotonic() + latency_ms / 1000, self._ack_late, sim, command_id, reason)

    def _ack_late(self, sim: SimVehicle, command_id: str, reason: str | None) -> None:
        ack = payloads.ack_encode(command_id, sim.vehicle.spec.vehicle_id, reason, self._clock())
        self._remember(command_id, ack)  # a redelivery from now on gets these bytes
        self._ack_publish(sim, command_id, ack, count_reject=True)

    def _ack_publish(self, sim: SimVehicle, command_id: str, ack: bytes, *, count_reject: bool) -> None:
        if sim.offline_until is not None:
            self.counters.offline += 1
            return
        self._publish(sim.ack_topic, ack, self.cfg.ack_qos)
        self.counters.acks += 1
        if self._ledger is not None:
            status = "rejected" if b'"status":"rejected"' in ack else "accepted"
            self._ledger_write("ack", command_id, sim.vehicle.spec.vehicle_id, status=status)
        if count_reject and b'"status":"rejected"' in ack:
            self.counters.rejects += 1

    def _ledger_write(self, event: str, command_id: str, vehicle_id: str, **fields: Any) -> None:
        record = {"event": event, "command_id": command_id, "vehicle_id": vehicle_id, **fields}
        record["at"] = datetime.now(UTC).isoformat()  # wall time, even under a simulated clock
        self._ledger.write(json.dumps(record, separators=(",", ":")) + "\n")

    def _remember(self, command_id: str, ack: bytes | None) -> None:
        seen = self._seen
        seen[command_id] = ack
        seen.move_to_end(command_id)
        if len(seen) > SEEN_MAX:
            seen.popitem(last=False)

    # --- telemetry: pushes, pull answers, discovery ---------------------------

    def _answering(self, request: payloads.Request):
        """The vehicles that answer a broadcast: online, not silent, and named if it names some."""
        if request.vehicle_ids is None:
            candidates = self.vehicles.values()
        else:
            candidates = (self.vehicles[v] for v in sorted(request.vehicle_ids) if v in self.vehicles)
        return [sim for sim in candidates if not sim.silent and sim.offline_until is None]

    def _on_pull(self, _topic: str, payload: bytes) -> None:
        request = payloads.request_parse(payload)
        self.counters.pull_requests += 1
        now, qos = self._clock(), self.cfg.telemetry_qos
        for sim in self._answering(request):
            state = sim.vehicle.state(now)
            if request.request_id is not None:
                state["request_id"] = request.request_id
            self._publish(sim.pull_topic, payloads.dumps(state), qos)
            self.counters.pull_answers += 1

    def _on_discovery(self, _topic: str, payload: bytes) -> None:
        request = payloads.request_parse(payload)
        self.counters.discovery_requests += 1
        now, qos = self._clock(), self.cfg.telemetry_qos
        for sim in self._answering(request):
            answer = sim.vehicle.discovery(now)
            if request.request_id is not None:
                answer["request_id"] = request.request_id
            self._publish(sim.discovery_topic, payloads.dumps(answer), qos)
            self.counters.discovery_answers += 1

    def _push(self, sim: SimVehicle, due: float) -> None:
        if sim.offline_until is None:
            self._publish(
                sim.state_topic, payloads.dumps(sim.vehicle.state(self._clock())), self.cfg.telemetry_qos
            )
            self.counters.states += 1
        self._timers.push(
            due + self.cfg.telemetry_interval_s, self._push, sim, due + self.cfg.telemetry_interval_s
        )

    # --- link losses (disconnect rate) --------------------------------------------

    def _link_down(self, sim: SimVehicle, stream) -> None:
        offline_s = self.cfg.offline_s * stream.uniform(0.5, 1.5)
        sim.offline_until = time.monotonic() + offline_s
        self._offline_count += 1
        self.counters.disconnects += 1
        self._timers.push(sim.offline_until, self._link_up, sim, stream)

    def _link_up(self, sim: SimVehicle, stream) -> None:
        sim.offline_until = None
        self._offline_count -= 1
        self._timers.push(
            time.monotonic() + stream.expovariate(self.cfg.disconnect_rate / 60), self._link_down, sim, stream
        )

    # --- timers and status ------------------------------------------------------

    def _timers_start(self) -> None:
        cfg, now = self.cfg, time.monotonic()
        count = len(self.vehicles)
        for sim in self.vehicles.values():
            if sim.silent:
                continue
            if cfg.telemetry_interval_s > 0:
                # Spread over the interval, in id order: never all vehicles in the same millisecond.
                due = now + cfg.telemetry_interval_s * (sim.index + 0.5) / count
                self._timers.push(due, self._push, sim, due)
            if cfg.disconnect_rate > 0:
                stream = rng(self.seed, sim.vehicle.spec.vehicle_id, "link")
                self._timers.push(
                    now + stream.expovariate(cfg.disconnect_rate / 60), self._link_down, sim, stream
                )
        if cfg.status_interval_s > 0:
            self._timers.push(now + cfg.status_interval_s, self._status_tick, now + cfg.status_interval_s)

    def _status_tick(self, due: float) -> None:
        self._print(self.status_line())
        self._timers.push(
            due + self.cfg.status_interval_s, self._status_tick, due + self.cfg.status_interval_s
        )

    @property
    def online(self) -> int:
        """Vehicles answering now: neither silent nor in a link loss."""
        return len(self.vehicles) - self.silent_count - self._offline_count

    def status_line(self, head: str = "sim status") -> str:
        """One line of ``key=value`` pairs (easy to grep and to parse)."""
        now = self._clock()
        plugged = sum(1 for sim in self.vehicles.values() if sim.vehicle.plugged_in(now))
        counts = " ".join(f"{key}={value}" for key, value in asdict(self.counters).items())
        return f"{head} online={self.online}/{len(self.vehicles)} plugged={plugged} {counts}"

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)
