"""Run the MQTT bridge: ``python manage.py mqtt_bridge``.

Long-lived: reconnects and resubscribes by itself; SIGTERM or Ctrl-C stops it
cleanly (DISCONNECT sent, so its Last Will is not published; received
messages are handled before exit). While it is subscribed on a live connection
and its handler thread runs, it touches ``--heartbeat-file`` every few seconds
(``python -m v2g_project.heartbeat`` checks it: the docker-compose health check).
"""

from __future__ import annotations

import signal
import sys
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import start_http_server

from v2g_project import heartbeat, mqtt
from v2g_project.bridge import Bridge, routes_load
from v2g_project.mqtt import MqttUnavailable

HEARTBEAT_EVERY_S = 5.0


class Command(BaseCommand):
    help = "Receive acks, telemetry and platform messages over MQTT and record them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Messages per handler call (default 500)."
        )
        parser.add_argument(
            "--batch-wait-ms", type=int, default=20, help="How long to gather a batch (default 20 ms)."
        )
        parser.add_argument(
            "--heartbeat-file",
            default="var/run/mqtt_bridge.alive",
            help="Touched every few seconds while healthy (relative: under the project directory; "
            "'' for none). Default var/run/mqtt_bridge.alive.",
        )

    def handle(self, *args, batch_size: int, batch_wait_ms: int, heartbeat_file: str, **options):
        if batch_size < 1 or batch_wait_ms < 0:
            raise CommandError("--batch-size must be >= 1 and --batch-wait-ms >= 0")
        config = settings.V2G
        mqtt.tls_check_or_exit(config.mqtt)
        # The network thread must not wait 5 ms (CPython's default switch
        # interval) for the GIL each time the handler thread runs a batch: at
        # 10,000 acks that wait, not CPU, made the bridge lag the vehicles.
        sys.setswitchinterval(0.0005)
        if config.metrics.prometheus_port:
            start_http_server(config.metrics.prometheus_port, addr="127.0.0.1")
        bridge = Bridge(
            config,
            routes_load(config, settings.MQTT_BRIDGE_ROUTE_PROVIDERS),
            batch_size=batch_size,
            batch_wait_s=batch_wait_ms / 1000,
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            bridge.start()
        except MqttUnavailable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"mqtt bridge running: {', '.join(r.topic for r in bridge.routes)}")
        alive = heartbeat.resolve(heartbeat_file) if heartbeat_file else None
        while True:
            if alive is not None and bridge.healthy():
                heartbeat.touch(alive)
            if stop.wait(HEARTBEAT_EVERY_S):
                break
        self.stdout.write("mqtt bridge stopping")
        bridge.stop()
