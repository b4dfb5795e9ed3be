"""The platform against a secured Mosquitto of its own: TLS, mutual TLS,
passwords and the per-vehicle ACL of deploy/mosquitto/, on free loopback ports,
with certificates made by scripts/gen-certs.sh. Also a broker restart in the
middle of a dispatch."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState
from tests.conftest import (
    ROOT,
    Inbox,
    free_port,
    replace,
    start_worker,
    stop_process,
    subprocess_env,
    wait_for,
)
from v2g_project import mqtt

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs the mosquitto binary"),
]

PASSWORDS = {"v2g-platform": "platform-Pa55", "ev-1": "ev1-Pa55", "ev-2": "ev2-Pa55"}


class SecureBroker:
    """A Mosquitto from deploy/mosquitto/mosquitto.prod.conf on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.certs = workdir / "certs"
        # The server certificate names "localhost" only: connecting to 127.0.0.1
        # must then fail the hostname check.
        subprocess.run(
            ["bash", str(ROOT / "scripts/gen-certs.sh"), str(self.certs), *PASSWORDS],
            env=subprocess_env(SERVER_NAMES="localhost"), check=True, capture_output=True,
        )  # fmt: skip
        passwd = workdir / "passwd"
        passwd.touch()
        for user, password in PASSWORDS.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True
            )
        shutil.copy(ROOT / "deploy/mosquitto/acl", workdir / "acl")
        self.tls_port, self.mtls_port = free_port(), free_port()
        text = (ROOT / "deploy/mosquitto/mosquitto.prod.conf").read_text()
        text = text.replace("/mosquitto/certs/", f"{self.certs}/").replace(
            "/mosquitto/config/", f"{workdir}/"
        )
        text = text.replace("listener 8883", f"listener {self.tls_port} 127.0.0.1")
        text = text.replace("listener 8884", f"listener {self.mtls_port} 127.0.0.1")
        lines = [line for line in text.splitlines() if not line.startswith(("persistence", "log_dest"))]
        # Tests run as root: keep root rather than drop to a user who cannot read pytest's tmp dirs.
        lines += ["persistence false", "log_dest stderr", "user root"]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stderr=log, stdout=log)
        wait_for(lambda: _port_open(self.tls_port) and _port_open(self.mtls_port), 10, "the secure broker")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def cfg(self, base, **changes):
        """An mqtt config for this broker: TLS + password as the platform unless changed."""
        values = {
            "url": f"ssl://localhost:{self.tls_port}", "ca_bundle": str(self.certs / "ca.crt"),
            "auth_method": "password", "username": "v2g-platform", "password": PASSWORDS["v2g-platform"],
        }  # fmt: skip
        return replace(base, **{**values, **changes})

    def env(self, **extra: str) -> dict[str, str]:
        """K_MQTT__* variables pointing a platform process at this broker."""
        return {
            "K_MQTT__URL": f"ssl://localhost:{self.tls_port}", "K_MQTT__CA_BUNDLE": str(self.certs / "ca.crt"),
            "K_MQTT__AUTH_METHOD": "password", "K_MQTT__USERNAME": "v2g-platform",
            "K_MQTT__PASSWORD": PASSWORDS["v2g-platform"], **extra,
        }  # fmt: skip


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    secured = SecureBroker(tmp_path_factory.mktemp("secure-broker"))
    secured.start()
    yield secured
    secured.stop()


def connected(cfg, role="test"):
    client = mqtt.client_create(cfg, role, will=False)
    mqtt.connect(client, cfg, timeout_s=5)
    return client


def subscribe(client, topic: str) -> Inbox:
    inbox, granted = Inbox(), threading.Event()
    client.message_callback_add(topic, inbox.on_message)
    client.on_subscribe = lambda *args: granted.set()
    client.subscribe(topic, qos=1)
    assert granted.wait(5)
    return inbox


def listen(client, topic: str) -> None:
    """Subscribe (messages go to the client's on_message) and wait for the SUBACK."""
    granted = threading.Event()
    client.on_subscribe = lambda *args: granted.set()
    client.subscribe(topic, qos=1)
    assert granted.wait(5)


def test_tls_with_a_password(broker, mqtt_cfg):
    cfg = broker.cfg(mqtt_cfg)
    client = connected(cfg)
    try:
        inbox = subscribe(client, "v2g-test/tls")
        mqtt.publish_wait(client, "v2g-test/tls", b"over tls", qos=1, timeout_s=5)
        assert inbox.wait(1)[0].payload == b"over tls"
        assert client.socket().version() in ("TLSv1.2", "TLSv1.3")
    finally:
        mqtt.disconnect(client)


def test_mutual_tls_uses_the_certificate_as_identity(broker, mqtt_cfg):
    platform = broker.cfg(
        mqtt_cfg, url=f"ssl://localhost:{broker.mtls_port}", auth_method="tls", username="", password="",
        client_cert=str(broker.certs / "v2g-platform.crt"), client_key=str(broker.certs / "v2g-platform.key"),
    )  # fmt: skip
    vehicle = replace(
        platform, client_cert=str(broker.certs / "ev-1.crt"), client_key=str(broker.certs / "ev-1.key")
    )
    platform_client, vehicle_client = connected(platform), connected(vehicle, "vehicle")
    try:
        inbox = subscribe(vehicle_client, "vehicle/+/command")
        platform_client.publish("vehicle/ev-2/command", b"not yours", qos=1).wait_for_publish(5)
        platform_client.publish("vehicle/ev-1/command", b"yours", qos=1).wait_for_publish(5)
        # The ACL keyed on the certificate's CN: ev-1 only ever sees its own command.
        assert [m.payload for m in inbox.wait(1)] == [b"yours"]
    finally:
        mqtt.disconnect(platform_client)
        mqtt.disconnect(vehicle_client)


def test_a_certificate_from_another_ca_is_refused(broker, mqtt_cfg, tmp_path):
    subprocess.run(
        ["bash", str(ROOT / "scripts/gen-certs.sh"), str(tmp_path / "other")], check=True, capture_output=True
    )
    cfg = broker.cfg(mqtt_cfg, ca_bundle=str(tmp_path / "other" / "ca.crt"))
    with pytest.raises(mqtt.MqttUnavailable, match="TLS certificate rejected"):
        connected(cfg)


def test_a_server_name_not_in_the_certificate_is_refused(broker, mqtt_cfg):
    cfg = broker.cfg(mqtt_cfg, url=f"ssl://127.0.0.1:{broker.tls_port}")
    with pytest.raises(
        mqtt.MqttUnavailable, match=r"TLS certificate rejected.*(IP address mismatch|hostname)"
    ):
        connected(cfg)


def test_a_wrong_password_is_refused_and_never_echoed(broker, mqtt_cfg, caplog):
    cfg = broker.cfg(mqtt_cfg, password="Wr0ng-secret")
    with pytest.raises(mqtt.MqttUnavailable) as caught:
        connected(cfg)
    assert "refused the connection" in str(caught.value)
    assert "Wr0ng-secret" not in str(caught.value) and "Wr0ng-secret" not in caplog.text
    assert "Wr0ng-secret" not in repr(cfg)  # SecretStr: not even in a config dump


def test_last_will_over_tls_on_death_only(broker, mqtt_cfg):
    from tests.integration.test_mqtt import platform_process_ends

    listener = connected(broker.cfg(mqtt_cfg))
    try:
        inbox = subscribe(listener, "v2g/lwt-secure")
        platform_process_ends("v2g/lwt-secure", **broker.env())
        assert [m.payload for m in inbox.wait(1)] == [b"killed"]
    finally:
        mqtt.disconnect(listener)


def test_plain_tcp_to_a_tls_listener_does_not_silently_work(broker, mqtt_cfg):
    cfg = broker.cfg(mqtt_cfg, url=f"tcp://localhost:{broker.tls_port}", use_tls=False, ca_bundle="")
    with pytest.raises(mqtt.MqttUnavailable):
        connected(cfg)


def test_acl_keeps_each_vehicle_to_its_own_topics(broker, mqtt_cfg):
    platform = connected(broker.cfg(mqtt_cfg))
    vehicle = connected(broker.cfg(mqtt_cfg, username="ev-1", password=PASSWORDS["ev-1"]), "vehicle")
    try:
        commands = subscribe(vehicle, "vehicle/+/command")
        acks = subscribe(platform, "vehicle/+/ack")
        platform.publish("vehicle/ev-2/command", b"for ev-2", qos=1).wait_for_publish(5)
        platform.publish("vehicle/ev-1/command", b"for ev-1", qos=1).wait_for_publish(5)
        assert [m.payload for m in commands.wait(1)] == [b"for ev-1"]

        # Under MQTT 3.1.1 a denied publish is still acknowledged: nothing tells
        # the vehicle, the message is just never delivered.
        vehicle.publish("vehicle/ev-2/ack", b"forged", qos=1).wait_for_publish(5)
        vehicle.publish("vehicle/ev-1/ack", b"genuine", qos=1).wait_for_publish(5)
        assert [(m.topic, m.payload) for m in acks.wait(1)] == [("vehicle/ev-1/ack", b"genuine")]
    finally:
        mqtt.disconnect(platform)
        mqtt.disconnect(vehicle)


def test_commands_use_the_configured_qos(broker, mqtt_cfg, settings, django_db_blocker):
    """qos.command is applied per message: a subscriber at QoS 2 gets QoS 0 commands."""
    from dispatch import services

    settings.V2G = replace(
        settings.V2G, mqtt=broker.cfg(mqtt_cfg, qos={"command": 0, "ack": 1, "telemetry": 0})
    )
    listener = connected(broker.cfg(mqtt_cfg))
    mqtt.publisher_close()
    try:
        inbox = Inbox()
        granted = threading.Event()
        listener.message_callback_add("vehicle/+/command", inbox.on_message)
        listener.on_subscribe = lambda *args: granted.set()
        listener.subscribe("vehicle/+/command", qos=2)
        assert granted.wait(5)
        with django_db_blocker.unblock():
            ids = _pending_commands(1)
            services.commands_publish([str(i) for i in ids], 0)
        message = inbox.wait(1)[0]
        assert message.qos == 0 and json.loads(message.payload)["command_id"] == str(ids[0])
    finally:
        mqtt.publisher_close()
        mqtt.disconnect(listener)


def _pending_commands(count: int, fleet_id: str | None = None) -> list:
    fleet_id = fleet_id or f"sec-{secrets.token_hex(3)}"
    fleet = Fleet.objects.create(id=fleet_id, name="secure")
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR",
        power_kw=5 * count,
        start_at=now,
        duration_s=600,
        valid_until=now + timedelta(minutes=10),
    )
    dispatch = Dispatch.objects.create(
        signal=signal,
        target_kw=5 * count,
        status=DispatchStatus.COLLECTING,
        deadline_at=now + timedelta(minutes=1),
    )
    ids = []
    for n in range(count):
        vehicle = Vehicle.objects.create(
            id=f"{fleet_id}-{n}", fleet=fleet, battery_kwh=50, max_charge_kw=7, max_discharge_kw=7
        )
        ids.append(
            Command.objects.create(
                dispatch=dispatch, vehicle=vehicle, power_kw=5, allocated_kw=5, valid_until=signal.valid_until
            ).id
        )
    return ids


@pytest.mark.django_db(transaction=True)
def test_broker_restart_mid_dispatch(broker, mqtt_cfg, tmp_path):
    """The worker's publisher and the bridge reconnect by themselves, the bridge
    resubscribes, and the dispatch in flight completes; a later one too."""
    queue = f"secure-{secrets.token_hex(3)}"
    env = broker.env(K_CELERY__DEFAULT_QUEUE=queue, K_DISPATCH__ACK_TIMEOUT_SECONDS="60")
    worker = start_worker(tmp_path / "worker.log", queue, concurrency=1, **env)
    bridge_log = tmp_path / "bridge.log"
    from tests.conftest import database_url

    with open(bridge_log, "ab") as log:
        from django.conf import settings as dj

        bridge = subprocess.Popen(
            [sys.executable, "manage.py", "mqtt_bridge", "--batch-wait-ms", "5"], cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(DATABASE_URL=database_url(dj.DATABASES["default"]), **env),
        )  # fmt: skip
    fleet = connected(broker.cfg(mqtt_cfg), "fleet")  # answers for the vehicles, acks on demand
    received: list[dict] = []
    fleet.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    try:
        from tests.conftest import worker_ready

        worker_ready(queue, tmp_path / "worker.log")
        wait_for(lambda: "bridge connected" in bridge_log.read_text(), 20, "the bridge")
        listen(fleet, "vehicle/+/command")
        # Two fleets: vehicles holding the first signal's setpoints are not free for the second.
        fleets = [Fleet.objects.create(id=f"rs{k}-{secrets.token_hex(3)}", name="restart") for k in range(2)]
        now = timezone.now()
        for fleet_obj in fleets:
            for n in range(3):
                vehicle = Vehicle.objects.create(
                    id=f"{fleet_obj.id}-{n}",
                    fleet=fleet_obj,
                    battery_kwh=60,
                    max_charge_kw=11,
                    max_discharge_kw=11,
                )
                VehicleState.objects.create(
                    vehicle=vehicle, soc=0.8, plugged_in=True, reported_at=now, received_at=now
                )

        def dispatch_now(power_kw: float, fleet_obj: Fleet) -> Dispatch:
            at = timezone.now()
            signal = FlexibilitySignal.objects.create(
                signal_type="FCR", power_kw=power_kw, start_at=at, duration_s=600,
                valid_until=at + timedelta(minutes=10), fleet=fleet_obj,
            )  # fmt: skip
            dispatch = Dispatch.objects.create(signal=signal, target_kw=power_kw)
            from dispatch.tasks import dispatch_allocate_task

            dispatch_allocate_task.apply_async(args=[str(dispatch.id)], queue=queue)
            return dispatch

        def ack_all(dispatch: Dispatch) -> None:
            for command in [c for c in received if c["dispatch_id"] == str(dispatch.id)]:
                ack = {
                    "command_id": command["command_id"],
                    "vehicle_id": command["vehicle_id"],
                    "status": "accepted",
                }
                fleet.publish(f"vehicle/{command['vehicle_id']}/ack", json.dumps(ack), qos=1)

        first = dispatch_now(15.0, fleets[0])
        wait_for(lambda: sum(c["dispatch_id"] == str(first.id) for c in received) == 3, 20, "the commands")

        broker.stop()  # mid-dispatch: commands out, no ack yet
        broker.start()
        wait_for(lambda: bridge_log.read_text().count("bridge connected") >= 2, 30, "the bridge to reconnect")
        wait_for(fleet.is_connected, 30, "the fleet client to reconnect")
        listen(fleet, "vehicle/+/command")  # a clean session: subscriptions are renewed by their owner
        ack_all(first)
        wait_for(
            lambda: Dispatch.objects.get(id=first.id).status == DispatchStatus.COMPLETED, 30, "the dispatch"
        )

        # The worker's publisher reconnected too: a new dispatch goes out and completes.
        second = dispatch_now(9.0, fleets[1])
        wait_for(lambda: sum(c["dispatch_id"] == str(second.id) for c in received) == 3, 30, "new commands")
        ack_all(second)
        wait_for(
            lambda: Dispatch.objects.get(id=second.id).status == DispatchStatus.COMPLETED,
            30,
            "the 2nd dispatch",
        )
        assert Command.objects.filter(dispatch=first, status=CommandStatus.ACKED).count() == 3
        log_text = bridge_log.read_text()
        assert PASSWORDS["v2g-platform"] not in log_text
        assert PASSWORDS["v2g-platform"] not in (tmp_path / "worker.log").read_text()
    finally:
        mqtt.disconnect(fleet)
        stop_process(bridge)
        stop_process(worker)
