"""The simulator against the machine's Mosquitto: ``python -m simulator`` as a
subprocess (or a Fleet in-process where a test needs a chosen clock or the
vehicle state), driven by a client from the project's MQTT factory.

Each test uses its own vehicle id prefix, so acks and answers of other runs
on the same broker are ignored. No Django database here.
"""

from __future__ import annotations

import io
import itertools
import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from simulator import config, domain
from simulator.fleet import REASON_SIMULATED, Fleet
from tests.conftest import ROOT, free_port, subprocess_env, wait_for
from v2g_project import mqtt
from v2g_project.config import MqttConfig

pytestmark = pytest.mark.services

PLUGGED = ("--profiles", "always=1")  # independent of the time of day the tests run at
ACK_FIELDS = {"command_id", "vehicle_id", "status", "timestamp"}
STATE_FIELDS = {"vehicle_id", "soc", "plugged_in", "power_kw", "timestamp", "battery_kwh", "target_soc"}


def status_parse(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


class SimProcess:
    """``python -m simulator`` with its output lines collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", *args], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._readers = [
            threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout_s: float = 15.0) -> str:
        def found():
            return next((line for line in self.lines if predicate(line)), None)

        with self._cond:
            if not self._cond.wait_for(
                lambda: found() is not None or self.proc.poll() is not None, timeout_s
            ):
                raise AssertionError(f"no such line within {timeout_s}s; output: {self.lines[-5:]}")
            line = found()
        if line is None:
            raise AssertionError(
                f"simulator exited {self.proc.returncode}: {self.lines[-5:]} {self.errors[-5:]}"
            )
        return line

    def wait_status(self, predicate: Callable[[dict], bool], timeout_s: float = 15.0) -> dict:
        line = self.wait_line(
            lambda line: line.startswith("sim status") and predicate(status_parse(line)), timeout_s
        )
        return status_parse(line)

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        """The exit status, once all of the output has been read."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for reader in self._readers:
            reader.join(timeout_s)
        return code

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout_s)


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(3)}-"


@pytest.fixture
def start_sim(mqtt_cfg, mqtt_client, prefix) -> Iterator[Callable[..., SimProcess]]:
    """start_sim(*options) -> a running simulator (ready: subscribed) on the test's prefix."""
    started: list[SimProcess] = []

    def start(*args: str, url: str | None = None, ready: bool = True) -> SimProcess:
        argv = ["--prefix", prefix, "--url", url or mqtt_cfg.url, "--seed", "1", *args]
        sim = SimProcess(argv, subprocess_env(V2G_SIM_PASSWORD=mqtt_cfg.password.get_secret_value()))
        started.append(sim)
        if ready:
            sim.wait_line(lambda line: line.startswith("sim ready"), 30)
        return sim

    yield start
    for sim in started:
        sim.stop()
    # A simulator that had to be killed leaves its retained Last Will on the
    # broker, which every later bridge would replay: delete it.
    for sim in started:
        topics = [
            line.rsplit("lwt=", 1)[1] for line in sim.lines if line.startswith("sim ready") and "lwt=" in line
        ]
        for topic in set(topics) - {"off"}:
            mqtt_client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)


class Listener:
    """Messages on a topic filter whose topic has our prefix in it."""

    def __init__(self, client, topic_filter: str, prefix: str) -> None:
        self.messages: list = []
        self._cond = threading.Condition()
        self._prefix = prefix
        granted = threading.Event()
        client.message_callback_add(topic_filter, self._on_message)
        client.on_subscribe = lambda *_: granted.set()
        client.subscribe(topic_filter, qos=1)
        assert granted.wait(5), f"no SUBACK for {topic_filter}"

    def _on_message(self, _client, _userdata, message) -> None:
        if self._prefix in message.topic:
            with self._cond:
                self.messages.append(message)
                self._cond.notify_all()

    def wait(self, count: int, timeout_s: float = 15.0) -> list:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")
            return list(self.messages)

    def payloads(self) -> list[dict]:
        with self._cond:
            return [json.loads(m.payload) for m in self.messages]


@pytest.fixture
def listen(mqtt_client, prefix) -> Callable[[str], Listener]:
    return lambda topic_filter: Listener(mqtt_client, topic_filter, prefix)


def command(
    vehicle_id: str, power_kw: float = 5.0, *, valid_s: float = 300, now: datetime | None = None
) -> tuple[str, bytes]:
    """A SPEC §5 command; returns (command_id, payload)."""
    now = now or datetime.now(UTC)
    command_id = str(uuid.uuid4())
    payload = {
        "command_id": command_id, "dispatch_id": str(uuid.uuid4()), "vehicle_id": vehicle_id,
        "signal_type": "FCR", "power_kw": power_kw, "start_at": now.isoformat(), "duration_s": valid_s,
        "valid_until": (now + timedelta(seconds=valid_s)).isoformat(), "issued_at": now.isoformat(),
    }  # fmt: skip
    return command_id, json.dumps(payload).encode()


def send(client, vehicle_id: str, payload: bytes) -> None:
    mqtt.publish_wait(client, f"vehicle/{vehicle_id}/command", payload, qos=1, timeout_s=5)


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:04d}" for n in range(count)]


# --- commands and acks ------------------------------------------------------------


def test_commands_are_acked_per_spec(start_sim, listen, mqtt_client, prefix):
    acks = listen("vehicle/+/ack")
    start_sim("--count", "3", *PLUGGED)
    sent = {}
    for vid in ids(prefix, 3):
        command_id, payload = command(vid, 4.0)
        sent[command_id] = vid
        send(mqtt_client, vid, payload)
    messages = acks.wait(3)
    for message in messages:
        ack = json.loads(message.payload)
        assert set(ack) == ACK_FIELDS
        assert ack["status"] == "accepted"
        assert sent[ack["command_id"]] == ack["vehicle_id"]
        assert message.topic == f"vehicle/{ack['vehicle_id']}/ack"
        stamp = datetime.fromisoformat(ack["timestamp"])
        assert stamp.utcoffset() == timedelta(0) and abs(stamp - datetime.now(UTC)) < timedelta(seconds=30)


def test_the_ledger_records_every_command_and_every_ack_sent(
    start_sim, listen, mqtt_client, prefix, tmp_path
):
    acks = listen("vehicle/+/ack")
    ledger = tmp_path / "ledger.jsonl"
    sim = start_sim("--count", "2", *PLUGGED, "--ledger", str(ledger))
    vid = ids(prefix, 2)[0]
    command_id, payload = command(vid, 3.0)
    send(mqtt_client, vid, payload)
    send(mqtt_client, vid, payload)  # as a QoS 1 redelivery would: the same ack again
    acks.wait(2)
    sim.stop()
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["event"], r.get("duplicate"), r.get("status")) for r in lines] == [
        ("command", False, None), ("ack", None, "accepted"), ("command", True, None), ("ack", None, "accepted"),
    ]  # fmt: skip
    assert {(r["command_id"], r["vehicle_id"]) for r in lines} == {(command_id, vid)}
    assert all(datetime.fromisoformat(r["at"]).utcoffset() == timedelta(0) for r in lines)


def test_rejects_and_drops_follow_the_rates_and_the_seed(start_sim, listen, mqtt_client, prefix):
    acks = listen("vehicle/+/ack")
    sim = start_sim("--count", "20", *PLUGGED, "--seed", "7", "--drop-rate", "0.2", "--reject-rate", "0.3",
                    "--status-interval-s", "0.2")  # fmt: skip
    fates = {}
    for n in range(100):
        vid = ids(prefix, 20)[n % 20]
        command_id, payload = command(vid, 2.0)
        fate = domain.draw(7, command_id, "fate")
        fates[command_id] = "dropped" if fate < 0.2 else "rejected" if fate < 0.5 else "accepted"
        send(mqtt_client, vid, payload)
    expected = {
        fate: sum(1 for f in fates.values() if f == fate) for fate in ("dropped", "rejected", "accepted")
    }
    assert 5 < expected["dropped"] < 40 and 10 < expected["rejected"] < 50  # the rates, roughly
    status = sim.wait_status(lambda s: s["commands"] == "100")
    assert (int(status["drops"]), int(status["rejects"])) == (expected["dropped"], expected["rejected"])
    answered = acks.wait(expected["accepted"] + expected["rejected"])
    got = {a["command_id"]: a for a in (json.loads(m.payload) for m in answered)}
    assert {cid for cid, fate in fates.items() if fate != "dropped"} == set(got)
    for cid, ack in got.items():
        assert ack["status"] == fates[cid]
        if fates[cid] == "rejected":
            assert ack["reason"] == REASON_SIMULATED


def test_silent_vehicles_never_answer(start_sim, listen, mqtt_client, prefix):
    acks, pulls = listen("vehicle/+/ack"), listen("v2g/telemetry/response/+")
    sim = start_sim("--count", "10", *PLUGGED, "--silent-rate", "0.3", "--status-interval-s", "0.2")
    assert "silent=3" in sim.lines[0]
    for vid in ids(prefix, 10):
        send(mqtt_client, vid, command(vid)[1])
    answered = {json.loads(m.payload)["vehicle_id"] for m in acks.wait(7)}
    mqtt.publish_wait(mqtt_client, "v2g/telemetry/request", b"{}", qos=1, timeout_s=5)
    pulled = {json.loads(m.payload)["vehicle_id"] for m in pulls.wait(7)}
    assert answered == pulled and len(answered) == 7
    status = sim.wait_status(lambda s: s["silent"] == "3")
    assert status["online"] == "7/10" and status["acks"] == "7"


def test_a_redelivered_command_is_acked_again_identically_and_applied_once(
    mqtt_cfg, listen, mqtt_client, prefix
):
    acks = listen("vehicle/+/ack")
    cfg = config.parse(["--count", "2", "--prefix", prefix, "--url", mqtt_cfg.url, *PLUGGED, "--seed", "3",
                        "--status-interval-s", "0", "--telemetry-interval-s", "0"], environ={})  # fmt: skip
    fleet = Fleet(cfg, out=io.StringIO())
    fleet.start()
    try:
        vid = ids(prefix, 1)[0]
        _command_id, payload = command(vid, 3.0)
        send(mqtt_client, vid, payload)
        send(mqtt_client, vid, payload)  # what a QoS 1 redelivery looks like to the vehicle
        first, second = acks.wait(2)
        assert first.payload == second.payload
        applied = fleet.call(lambda: fleet.vehicles[vid].vehicle.applied_commands)
        assert applied == 1
        assert (fleet.counters.commands, fleet.counters.duplicates, fleet.counters.acks) == (2, 1, 2)
    finally:
        fleet.stop()


def test_malformed_commands_are_ignored_and_counted(start_sim, listen, mqtt_client, prefix):
    acks = listen("vehicle/+/ack")
    sim = start_sim("--count", "1", *PLUGGED, "--status-interval-s", "0.2")
    vid = ids(prefix, 1)[0]
    good = json.loads(command(vid)[1])
    bad = [
        b"{not json",
        b"\x00\xff",
        b"[]",
        json.dumps({k: v for k, v in good.items() if k != "command_id"}).encode(),
        json.dumps({**good, "power_kw": "lots"}).encode(),
        json.dumps({**good, "vehicle_id": "someone-else"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "valid_until"}).encode(),
    ]
    for payload in bad:
        send(mqtt_client, vid, payload)
    command_id, payload = command(vid)
    send(mqtt_client, vid, payload)
    assert json.loads(acks.wait(1)[0].payload)["command_id"] == command_id
    status = sim.wait_status(lambda s: s["malformed"] == str(len(bad)))
    assert status["acks"] == "1" and status["errors"] == "0"
    assert len(acks.messages) == 1 and sim.proc.poll() is None


def test_ack_latency_fixed_and_random(start_sim, listen, mqtt_client, prefix):
    acks = listen("vehicle/+/ack")
    start_sim("--count", "4", *PLUGGED, "--ack-latency-ms", "400")
    vid = ids(prefix, 1)[0]
    began = time.monotonic()
    send(mqtt_client, vid, command(vid)[1])
    acks.wait(1)
    assert time.monotonic() - began >= 0.4


def test_random_latency_stays_in_its_bounds(start_sim, listen, mqtt_client, prefix):
    acks = listen("vehicle/+/ack")
    start_sim("--count", "10", *PLUGGED, "--ack-latency-ms-min", "200", "--ack-latency-ms-max", "600")
    sent = {}
    for vid in ids(prefix, 10):
        command_id, payload = command(vid)
        sent[command_id] = time.monotonic()
        send(mqtt_client, vid, payload)
    acks.wait(10)
    delays = [m.timestamp - sent[json.loads(m.payload)["command_id"]] for m in acks.messages]
    assert min(delays) >= 0.2 and max(delays) < 0.6 + 1.0  # upper bound generous for a loaded machine
    assert max(delays) - min(delays) > 0.05  # really random, not fixed


def test_an_unplugged_vehicle_rejects_with_a_reason(mqtt_cfg, listen, mqtt_client, prefix):
    """In-process with a chosen clock: commuters are away at noon on a weekday, home at 03:00."""
    acks = listen("vehicle/+/ack")
    clock_at = {"now": datetime(2026, 11, 24, 11, 0, tzinfo=UTC)}  # Tuesday 12:00 in Paris
    cfg = config.parse(["--count", "3", "--prefix", prefix, "--url", mqtt_cfg.url, "--profiles", "commuter=1",
                        "--status-interval-s", "0", "--telemetry-interval-s", "0"], environ={})  # fmt: skip
    fleet = Fleet(cfg, clock=lambda: clock_at["now"], out=io.StringIO())
    fleet.start()
    try:
        vid = ids(prefix, 1)[0]
        send(mqtt_client, vid, command(vid, now=clock_at["now"])[1])
        ack = json.loads(acks.wait(1)[0].payload)
        assert (ack["status"], ack["reason"]) == ("rejected", "not plugged in")
        clock_at["now"] = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # Wednesday 03:00: home
        send(mqtt_client, vid, command(vid, now=clock_at["now"])[1])
        assert json.loads(acks.wait(2)[1].payload)["status"] == "accepted"
    finally:
        fleet.stop()


def test_link_losses_take_vehicles_offline(start_sim, listen, mqtt_client, prefix):
    acks = listen("vehicle/+/ack")
    # 10 losses a minute per vehicle... per second here: all five are down almost at once, for 30-90 s.
    sim = start_sim("--count", "5", *PLUGGED, "--disconnect-rate", "600", "--offline-s", "60",
                    "--status-interval-s", "0.2")  # fmt: skip
    sim.wait_status(lambda s: s["online"] == "0/5")
    for vid in ids(prefix, 5):
        send(mqtt_client, vid, command(vid)[1])
    status = sim.wait_status(lambda s: s["offline"] == "5")
    assert status["acks"] == "0" and int(status["disconnects"]) >= 5 and acks.messages == []


# --- telemetry -----------------------------------------------------------------------


def test_pull_requests_are_answered(start_sim, listen, mqtt_client, prefix):
    responses = listen("v2g/telemetry/response/+")
    start_sim("--count", "6", *PLUGGED)
    mqtt.publish_wait(
        mqtt_client, "v2g/telemetry/request", json.dumps({"request_id": "r-1"}), qos=1, timeout_s=5
    )
    messages = responses.wait(6)
    for message in messages:
        state = json.loads(message.payload)
        assert set(state) >= STATE_FIELDS and state["request_id"] == "r-1"
        assert message.topic == f"v2g/telemetry/response/{state['vehicle_id']}"
        assert 0 <= state["soc"] <= 1 and state["plugged_in"] is True
    # A request naming vehicles is answered by those only.
    wanted = ids(prefix, 6)[:2]
    request = json.dumps({"request_id": "r-2", "vehicle_ids": wanted})
    mqtt.publish_wait(mqtt_client, "v2g/telemetry/request", request, qos=1, timeout_s=5)
    responses.wait(8)
    assert sorted(p["vehicle_id"] for p in responses.payloads() if p["request_id"] == "r-2") == wanted


def test_discovery_is_answered(start_sim, listen, mqtt_client, prefix):
    responses = listen("v2g/fleet/response/+")
    start_sim("--count", "4", *PLUGGED)
    mqtt.publish_wait(mqtt_client, "v2g/fleet/discovery", b"", qos=1, timeout_s=5)
    responses.wait(4)
    found = {p["vehicle_id"]: p for p in responses.payloads()}
    assert sorted(found) == ids(prefix, 4)
    for answer in found.values():
        assert {"battery_kwh", "max_charge_kw", "max_discharge_kw", "is_v2g", *STATE_FIELDS} <= set(answer)
        assert 40 <= answer["battery_kwh"] <= 80 and 7 <= answer["max_charge_kw"] <= 22
        assert answer["is_v2g"] is True


def test_state_is_pushed_at_the_interval_spread_over_it(start_sim, listen, prefix):
    states = listen("v2g/vehicle/state/+")
    start_sim("--count", "5", *PLUGGED, "--telemetry-interval-s", "1")
    states.wait(15, timeout_s=20)
    by_vehicle: dict[str, list[datetime]] = {}
    for message in states.messages:
        state = json.loads(message.payload)
        assert set(state) >= STATE_FIELDS and message.topic == f"v2g/vehicle/state/{state['vehicle_id']}"
        by_vehicle.setdefault(state["vehicle_id"], []).append(datetime.fromisoformat(state["timestamp"]))
    assert sorted(by_vehicle) == ids(prefix, 5)
    for stamps in by_vehicle.values():
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        assert gaps and all(0.7 < gap < 1.5 for gap in gaps), gaps
    firsts = sorted(stamps[0] for stamps in by_vehicle.values())
    assert (firsts[-1] - firsts[0]).total_seconds() > 0.5  # spread over the interval, not one burst


# --- the process ---------------------------------------------------------------------


def test_presence_a_retained_birth_then_a_retained_will_and_nothing_after_a_clean_stop(
    start_sim, listen, mqtt_client, prefix
):
    """The fleet is one client: one gateway Last Will and birth message naming its
    vehicles, on lwt_topic_prefix/sim-{prefix}{first}, both retained."""
    topic = f"v2g/vehicle/lwt/sim-{prefix}0000"
    try:
        sim = start_sim("--count", "2", "--telemetry-interval-s", "0")
        assert sim.lines[0].endswith(f"lwt={topic}")
        live = listen(topic)
        birth = live.wait(1)[0]
        assert birth.retain
        birth = json.loads(birth.payload)
        assert (birth["status"], birth["online"], birth["vehicle_ids"]) == ("online", True, ids(prefix, 2))

        sim.proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        sim.wait_exit()
        # The broker publishes the will when it notices the dead connection: wait
        # for it live, so that the new subscription below surely gets it retained.
        live.wait(2)
        will = listen(topic).wait(1)[0]  # a new subscription: what the broker retains now
        assert will.retain
        will = json.loads(will.payload)
        assert (will["status"], will["online"], will["vehicle_ids"]) == ("offline", False, ids(prefix, 2))
        # Set before connecting: never later than the connection whose loss it announces.
        assert datetime.fromisoformat(will["timestamp"]) <= datetime.fromisoformat(birth["timestamp"])

        again = start_sim("--count", "2", "--telemetry-interval-s", "0")
        assert json.loads(listen(topic).wait(1)[0].payload)["status"] == "online"  # the birth replaced it
        assert again.stop() == 0
        # Retained messages come first after a subscription: if the marker is first, none is left.
        inbox = listen(topic)
        mqtt.publish_wait(mqtt_client, topic, b'{"marker": 1}', qos=1, timeout_s=5)
        assert json.loads(inbox.wait(1)[0].payload) == {"marker": 1}
    finally:
        mqtt_client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)


def test_status_lines_then_sigterm_exits_0(start_sim, prefix):
    sim = start_sim("--count", "3", "--status-interval-s", "0.2", "--telemetry-interval-s", "0")
    ready = sim.lines[0]
    assert f"vehicles=3 ids={prefix}0000..{prefix}0002" in ready and "seed=1" in ready
    status = sim.wait_status(lambda s: True)
    assert {"online", "commands", "acks", "rejects", "drops"} <= set(status)
    sim.wait_line(lambda _line: sum(line.startswith("sim status") for line in sim.lines) >= 2)  # every 0.2 s
    assert sim.stop() == 0
    assert sim.lines[-1].startswith("sim stopped")


def test_duration_ends_the_run_with_status_0(start_sim):
    sim = start_sim("--count", "2", "--duration-s", "0.5")
    assert sim.wait_exit(15) == 0


def test_yaml_config_with_the_command_line_winning(start_sim, tmp_path, prefix):
    path = tmp_path / "sim.yaml"
    path.write_text(f"count: 9\nprefix: {prefix}\nstatus-interval-s: 0\nprofiles: always=1\n")
    sim = start_sim("--config", str(path), "--count", "4")
    assert f"vehicles=4 ids={prefix}0000..{prefix}0003" in sim.lines[0]


def test_bad_option_exits_2_and_names_it():
    result = subprocess.run([sys.executable, "-m", "simulator", "--drop-rate", "2"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=subprocess_env())  # fmt: skip
    assert result.returncode == 2 and "--drop-rate" in result.stderr


def test_an_unreachable_broker_exits_1_without_credentials(start_sim):
    sim = start_sim("--url", f"tcp://127.0.0.1:{free_port()}", "--password", "hunter2-secret", ready=False)
    assert sim.wait_exit(30) == 1
    text = "\n".join(sim.errors)
    assert "unreachable" in text and "hunter2" not in text


def test_the_simulator_does_not_import_django():
    code = "import sys, simulator.__main__; bad = [m for m in ('django', 'celery') if m in sys.modules]; print(bad)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=subprocess_env(DJANGO_SETTINGS_MODULE=""))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- scale ---------------------------------------------------------------------------


@pytest.fixture
def fleet_broker(tmp_path) -> Iterator[str]:
    """A private Mosquitto with the shipped fleet-scale settings: the machine's
    broker keeps Mosquitto's default max_queued_messages 1000, which loses
    thousands of a 10,000-command burst (README, bench/README.md)."""
    if not shutil.which("mosquitto"):
        pytest.skip("needs the mosquitto binary")
    port = free_port()
    shipped = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    limits = [line for line in shipped.splitlines() if line.split(" ")[0] in
              ("set_tcp_nodelay", "max_queued_messages", "max_inflight_messages")]  # fmt: skip
    assert len(limits) == 3
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("\n".join([f"listener {port} 127.0.0.1", "allow_anonymous true", *limits, ""]))
    with open(tmp_path / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    url = f"tcp://127.0.0.1:{port}"
    try:
        probe = MqttConfig(url=url)
        wait_for(lambda: _reachable(probe), 10, "the private broker")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _reachable(cfg: MqttConfig) -> bool:
    try:
        mqtt.probe(cfg, 1)
    except mqtt.MqttUnavailable:
        return False
    return True


def test_ten_thousand_commands_acked_in_seconds(start_sim, fleet_broker, prefix, record_property):
    count = 10_000
    sim = start_sim("--count", str(count), *PLUGGED, "--telemetry-interval-s", "0", "--status-interval-s", "0",
                    url=fleet_broker)  # fmt: skip
    cfg = MqttConfig(url=fleet_broker)
    client = mqtt.client_create(cfg, "test-platform", will=False)
    acked: set[str] = set()
    done = threading.Event()

    def on_ack(_c, _u, message):
        acked.add(json.loads(message.payload)["command_id"])
        if len(acked) == count:
            done.set()

    client.on_message = on_ack
    mqtt.connect(client, cfg)
    try:
        granted = threading.Event()
        client.on_subscribe = lambda *_: granted.set()
        client.subscribe("vehicle/+/ack", qos=1)
        assert granted.wait(5)
        commands = [(vid, command(vid)[1]) for vid in ids(prefix, count)]
        began = time.perf_counter()
        for vid, payload in commands:
            client.publish(f"vehicle/{vid}/command", payload, qos=1)
        assert done.wait(60), f"{len(acked)} of {count} acked"
        elapsed = time.perf_counter() - began
    finally:
        mqtt.disconnect(client)
    record_property("ack_10000_s", round(elapsed, 2))
    print(f"\n10,000 commands published and acked in {elapsed:.2f} s ({count / elapsed:,.0f} acks/s)")
    assert sim.stop() == 0
    assert f"commands={count} acks={count}" in sim.lines[-1]
