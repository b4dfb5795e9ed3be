"""``python manage.py health [--worker]``: is everything the platform needs up?

Checks the database, the Celery broker and the MQTT broker like /readyz;
with --worker, also asks a real Celery worker to answer a ping and to publish
it over MQTT from its own process, and every queue of the platform
(v2g_project/queues.py: dispatch, telemetry, planning, kpis and the default
one) to have a worker that answers on it. Exits non-zero when anything is down.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from v2g_project import mqtt
from v2g_project.config import ConfigError
from v2g_project.health import run_checks


class Command(BaseCommand):
    help = "Check the database, Celery broker, MQTT broker and (with --worker) a live worker."

    def add_arguments(self, parser):
        parser.add_argument(
            "--worker",
            action="store_true",
            help="Also require a Celery worker to answer, and one on every queue.",
        )
        parser.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for the worker.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the result as JSON.")

    def handle(self, *args, worker: bool, timeout: float, as_json: bool, **options):
        results = run_checks()
        if worker:
            results["worker"] = self._worker_check(timeout)
            results["queues"] = self._queues_check(timeout)
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
        try:
            client = mqtt.client_create(cfg, "health", will=False)
            client.on_message = lambda *_: heard.set()
            mqtt.connect(client, cfg, timeout_s=min(timeout, cfg.connect_timeout_s))
            client.subscribe(topic, qos=1)
        except (mqtt.MqttUnavailable, ConfigError):  # the mqtt check reports which
            client, topic = None, ""  # still check the worker itself
        try:
            answer = health_ping.apply_async(
                args=[secrets.token_hex(4), topic], queue=settings.V2G.celery.default_queue
            ).get(timeout=timeout)
            if client is not None and not heard.wait(timeout):
                return {"ok": False, "error": "worker answered but its MQTT publish never arrived"}
        except Exception as exc:  # noqa: BLE001 - TimeoutError, broker errors: all mean "down"
            return {"ok": False, "error": f"no worker answered within {timeout}s ({type(exc).__name__})"}
        finally:
            if client is not None:
                mqtt.disconnect(client)
        via = "answered and published over MQTT" if client is not None else "answered (MQTT not checked)"
        return {"ok": True, "worker": f"{answer['hostname']} pid {answer['pid']} {via}"}

    def _queues_check(self, timeout: float) -> dict:
        """A ping on every queue at once: a queue nobody consumes would hold its
        tasks forever (a dispatch worker without a background one, say)."""
        from v2g_project.queues import queue_names
        from v2g_project.tasks import health_ping

        names = queue_names(settings.V2G.celery)
        try:
            pending = {name: health_ping.apply_async(args=[name], queue=name) for name in names}
        except Exception as exc:  # noqa: BLE001 - the broker check reports the cause
            return {"ok": False, "error": f"cannot send to the queues ({type(exc).__name__})"}
        deadline = time.monotonic() + timeout
        silent = []
        for name, result in pending.items():
            try:
                result.get(timeout=max(deadline - time.monotonic(), 0.1))
            except Exception:  # noqa: BLE001 - a timeout or a broker error: no answer
                silent.append(name)
        if silent:
            return {
                "ok": False,
                "error": f"no worker answered on queue(s) {', '.join(silent)} within {timeout}s",
            }
        return {"ok": True, "worker": f"a worker answered on each of {', '.join(names)}"}
