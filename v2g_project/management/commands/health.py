"""``python manage.py health [--worker]``: is everything the platform needs up?

Checks the database, the Celery broker and the MQTT broker like /readyz;
with --worker, also asks a real Celery worker to answer a ping and to publish
it over MQTT from its own process. Exits non-zero when anything is down.
"""

from __future__ import annotations

import json
import secrets
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from v2g_project import mqtt
from v2g_project.health import run_checks


class Command(BaseCommand):
    help = "Check the database, Celery broker, MQTT broker and (with --worker) a live worker."

    def add_arguments(self, parser):
        parser.add_argument("--worker", action="store_true", help="Also require a Celery worker to answer.")
        parser.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for the worker.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the result as JSON.")

    def handle(self, *args, worker: bool, timeout: float, as_json: bool, **options):
        results = run_checks()
        if worker:
            results["worker"] = self._worker_check(timeout)
        if as_json:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            for name, result in results.items():
                state = "ok  " if result["ok"] else "DOWN"
                detail = result.get("error") or result.get("worker") or f"{result.get('latency_ms')} ms"
                self.stdout.write(f"{state} {name:<9} {detail}")
        down = [name for name, result in results.items() if not result["ok"]]
        if down:
            raise CommandError(f"unavailable: {', '.join(down)}")

    def _worker_check(self, timeout: float) -> dict:
        """Ping a worker; when MQTT is up, also have it publish from its own client."""
        from v2g_project.tasks import health_ping

        cfg = settings.V2G.mqtt
        topic = f"v2g/health/{secrets.token_hex(6)}"
        heard = threading.Event()
        client = mqtt.client_create(cfg, "health", will=False)
        client.on_message = lambda *_: heard.set()
        try:
            mqtt.connect(client, cfg, timeout_s=min(timeout, cfg.connect_timeout_s))
            client.subscribe(topic, qos=1)
        except mqtt.MqttUnavailable:
            client, topic = None, ""  # still check the worker itself
        try:
            answer = health_ping.delay(secrets.token_hex(4), topic).get(timeout=timeout)
            if client is not None and not heard.wait(timeout):
                return {"ok": False, "error": "worker answered but its MQTT publish never arrived"}
        except Exception as exc:  # noqa: BLE001 - TimeoutError, broker errors: all mean "down"
            return {"ok": False, "error": f"no worker answered within {timeout}s ({type(exc).__name__})"}
        finally:
            if client is not None:
                mqtt.disconnect(client)
        via = "answered and published over MQTT" if client is not None else "answered (MQTT not checked)"
        return {"ok": True, "worker": f"{answer['hostname']} pid {answer['pid']} {via}"}
