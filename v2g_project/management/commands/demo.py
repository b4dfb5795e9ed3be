"""``python manage.py demo``: the whole platform on one machine, one command.

Runs migrations, makes a demo operator login and a demo fleet, then starts a
real web server, Celery worker, Celery Beat and (when an MQTT broker answers)
the MQTT bridge as separate processes, checks that a real worker answers, and
prints where to look. Ctrl-C (or --duration) stops every process it started.

Embedded defaults: SQLite, and when Redis is not reachable, kombu's
``filesystem://`` transport (queues as files, no server needed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from fleet.models import Fleet, Site, Vehicle
from v2g_project import health
from v2g_project.metrics import multiproc_dir_wipe

DEMO_USER, DEMO_PASSWORD = "admin", "v2g-demo"
DEMO_FLEET = "demo"


class Command(BaseCommand):
    help = "Run web, worker, beat and the MQTT bridge together on embedded defaults."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="Web port on 127.0.0.1 (default 8000).")
        parser.add_argument(
            "--vehicles", type=int, default=50, help="Vehicles in the demo fleet (default 50)."
        )
        parser.add_argument(
            "--duration",
            type=float,
            default=0,
            help="Stop by itself after this many seconds (0: run until Ctrl-C).",
        )

    def handle(self, *args, port: int, vehicles: int, duration: float, **options):
        if not 0 < port < 65536 or vehicles < 0 or duration < 0:
            raise CommandError("--port must be 1-65535, --vehicles and --duration non-negative")
        self.base = Path(settings.BASE_DIR)
        self.log_dir = self.base / "var" / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)

        # Every process this demo starts writes its metrics here; start from zero.
        multiproc_dir_wipe(Path(settings.PROMETHEUS_MULTIPROC_DIR))
        self.say("preparing the database")
        call_command("migrate", interactive=False, verbosity=0)
        self._seed(vehicles)

        env = self._child_env()
        mqtt_up = self._mqtt_reachable()
        self.processes: dict[str, subprocess.Popen] = {}
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            self._start(
                "web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env
            )
            celery = [sys.executable, "-m", "celery", "-A", "v2g_project"]
            self._start("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"], env)
            self._start("beat", [*celery, "beat", "--loglevel", "INFO"], env)
            if mqtt_up:
                self._start("bridge", [sys.executable, "manage.py", "mqtt_bridge"], env)
            self._report(port, env)
            deadline = time.monotonic() + duration if duration else None
            while not stop.is_set():
                dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
                if dead:
                    raise CommandError(
                        f"{', '.join(dead)} stopped unexpectedly; see {self.log_dir}/{dead[0]}.log"
                    )
                if deadline and time.monotonic() > deadline:
                    break
                stop.wait(0.5)
        finally:
            self._stop_all()

    # --- set-up ------------------------------------------------------------------

    def _seed(self, count: int) -> None:
        with transaction.atomic():
            user_model = get_user_model()
            if not user_model.objects.filter(username=DEMO_USER).exists():
                user_model.objects.create_superuser(DEMO_USER, "admin@localhost", DEMO_PASSWORD)
            fleet, _ = Fleet.objects.get_or_create(id=DEMO_FLEET, defaults={"name": "Demo fleet"})
            site, _ = Site.objects.get_or_create(fleet=fleet, name="Depot")
            existing = set(Vehicle.objects.filter(fleet=fleet).values_list("id", flat=True))
            Vehicle.objects.bulk_create(
                [
                    Vehicle(
                        id=f"demo-ev-{n:04d}",
                        fleet=fleet,
                        site=site,
                        cluster=f"c{n % 4}",
                        segment="commuter" if n % 3 else "captive",
                        battery_kwh=(40, 52, 64, 77)[n % 4],
                        max_charge_kw=11.0,
                        max_discharge_kw=(7.4, 11.0)[n % 2],
                        min_soc=0.2,
                        target_soc=0.8,
                    )
                    for n in range(count)
                    if f"demo-ev-{n:04d}" not in existing
                ]
            )
        self.say(f"demo fleet '{DEMO_FLEET}': {Vehicle.objects.filter(fleet=fleet).count()} vehicles")

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "v2g_project.settings"}
        try:
            health.check_broker(2.0)
            self.say(f"Celery broker: {health._where(settings.CELERY_BROKER_URL)}")
        except ConnectionError:
            self.say(
                f"Celery broker {health._where(settings.CELERY_BROKER_URL)} not reachable: "
                "using the embedded filesystem transport (var/celery)"
            )
            env["CELERY_BROKER_URL"] = "filesystem://"
        return env

    def _mqtt_reachable(self) -> bool:
        try:
            health.check_mqtt(2.0)
        except Exception as exc:  # noqa: BLE001
            self.say(f"{exc}: the MQTT bridge is not started (start Mosquitto, or set K_MQTT__URL)")
            return False
        self.say(f"MQTT broker: {health._where(settings.V2G.mqtt.url)}")
        return True

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            command, cwd=self.base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.say(f"started {name} (pid {self.processes[name].pid}, log var/log/{name}.log)")

    def _report(self, port: int, env: dict[str, str]) -> None:
        ping = [sys.executable, "manage.py", "health", "--worker", "--timeout", "60"]
        result = subprocess.run(ping, cwd=self.base, env=env, capture_output=True, text=True, timeout=120)
        for line in result.stdout.splitlines():
            self.say(f"health: {line}")
        url = f"http://127.0.0.1:{port}"
        self.stdout.write(
            "\n"
            f"  admin    {url}/admin/   (login {DEMO_USER} / {DEMO_PASSWORD})\n"
            f"  API      {url}/api/\n"
            f"  metrics  {url}/metrics\n"
            f"  health   {url}/healthz\n"
            f"  logs     {self.log_dir}/\n"
            "  Ctrl-C stops everything.\n"
        )

    def _stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, proc in self.processes.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.say(f"{name} did not stop in time and was killed")
        if self.processes:
            self.say("all processes stopped")

    def say(self, text: str) -> None:
        self.stdout.write(f"[demo] {text}")
        self.stdout.flush()
