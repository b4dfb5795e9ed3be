"""``python manage.py demo``: the whole platform on one machine, one command.

Runs migrations, makes a demo operator login and a demo fleet, then starts a
real web server, Celery worker, Celery Beat and (when an MQTT broker answers)
the MQTT bridge as separate processes, checks that a real worker answers, and
prints where to look. Ctrl-C (or --duration) stops every process it started.

Embedded defaults: SQLite, and when Redis is not reachable, kombu's
``filesystem://`` transport (queues as files, no server needed).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
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

from dispatch.generator import SCENARIOS
from fleet import services as fleet_services
from fleet.models import ApiToken, Fleet, Site, Vehicle
from v2g_project import health, mqtt
from v2g_project.metrics import multiproc_dir_wipe

DEMO_USER, DEMO_PASSWORD = "admin", "v2g-demo"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DEMO_FLEET = "demo"
DEMO_TOKEN_NAME = "demo (manage.py demo)"


class Command(BaseCommand):
    help = "Run web, worker, beat and the MQTT bridge together on embedded defaults."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="Web port on 127.0.0.1 (default 8000).")
        parser.add_argument("--vehicles", type=int, default=200, help="Simulated vehicles (default 200).")
        parser.add_argument(
            "--duration",
            type=float,
            default=0,
            help="Stop by itself after this many seconds (0: run until Ctrl-C).",
        )
        parser.add_argument(
            "--signal-every",
            type=float,
            default=None,
            help="Submit a demo FCR signal every N seconds (0: none). Default 30, or none when the "
            "signal generator or the RTE connector runs.",
        )
        parser.add_argument(
            "--seed", type=int, default=42, help="Seed of the simulator and the demo signals."
        )
        parser.add_argument(
            "--rte-gen",
            action="store_true",
            help="Also run the synthetic RTE signal generator (as rteGenerator.enabled: true).",
        )
        parser.add_argument(
            "--rte-gen-scenario",
            choices=SCENARIOS,
            metavar="NAME",
            help=f"Generator scenario (implies --rte-gen): {', '.join(SCENARIOS)}.",
        )
        parser.add_argument(
            "-c",
            "--config",
            metavar="PATH",
            help="Configuration file (as `manage.py -c PATH demo`), e.g. config.preprod.yaml.",
        )
        parser.add_argument(
            "--rte",
            action="store_true",
            help="Also run the RTE connector (as rte.enabled: true; in mock mode with its mock RTE server).",
        )
        # Set by the demo itself when it re-executes with embedded services resolved.
        parser.add_argument("--resolved", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--embedded-mqtt", action="store_true", help=argparse.SUPPRESS)

    def handle(self, *args, port: int, vehicles: int, duration: float, **options):
        if not 0 < port < 65536 or vehicles < 0 or duration < 0 or (options["signal_every"] or 0) < 0:
            raise CommandError("--port must be 1-65535; --vehicles, --duration, --signal-every non-negative")
        if options["config"]:
            self._reexec_with_config(options["config"])  # does not return
        if not options["resolved"]:
            self._resolve_and_reexec()  # does not return
        # This console shows the demo's own summary; each process logs to var/log/.
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("kombu").setLevel(logging.ERROR)
        self.base = Path(settings.BASE_DIR)
        self.log_dir = self.base / "var" / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            if options["embedded_mqtt"]:
                self._start_embedded_mqtt()
            # Every process this demo starts writes its metrics here; start from zero.
            multiproc_dir_wipe(Path(settings.PROMETHEUS_MULTIPROC_DIR))
            self.say("preparing the database")
            call_command("migrate", interactive=False, verbosity=0)
            self._seed(vehicles)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "v2g_project.settings"}
            generator, rte = self._signal_sources(env, options)
            self._start(
                "web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env
            )
            celery = [sys.executable, "-m", "celery", "-A", "v2g_project"]
            self._start("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"], env)
            self._start("beat", [*celery, "beat", "--loglevel", "INFO"], env)
            self._start("bridge", [sys.executable, "manage.py", "mqtt_bridge"], env)
            if vehicles:
                self._start("simulator", self._simulator_command(vehicles, options["seed"]), env)
            if generator and settings.V2G.rte_generator.runner == "process":
                scenario, fleet = env["K_RTEGENERATOR__SCENARIO"], env["K_RTEGENERATOR__FLEET_ID"]
                gen = [sys.executable, "manage.py", "rte_generate", "--scenario", scenario, "--fleet", fleet]
                self._start("rte-generator", gen, env)
            elif generator:
                self.say("signal generator: run by Celery Beat (rteGenerator.runner: beat)")
            if rte:
                self._start("rte-connector", [sys.executable, "manage.py", "rte_connector"], env)
            signal_every = options["signal_every"]
            if signal_every is None:
                signal_every = 0 if generator or rte else 30
            self._report(port, env)
            self._run(stop, duration, signal_every, options["seed"])
        finally:
            self._stop_all()

    def _signal_sources(self, env: dict[str, str], options: dict) -> tuple[bool, bool]:
        """Whether the signal generator and the RTE connector run; their settings go to
        every child through ``env`` (the Beat-driven generator runs in worker and beat)."""
        gen_cfg, rte_cfg = settings.V2G.rte_generator, settings.V2G.rte
        generator = bool(options["rte_gen"] or options["rte_gen_scenario"] or gen_cfg.enabled)
        if generator:
            env["K_RTEGENERATOR__ENABLED"] = "true"
            env["K_RTEGENERATOR__SCENARIO"] = options["rte_gen_scenario"] or gen_cfg.scenario
            env["K_RTEGENERATOR__FLEET_ID"] = gen_cfg.fleet_id or DEMO_FLEET
            self.say(f"signal generator: scenario {env['K_RTEGENERATOR__SCENARIO']}, seed {gen_cfg.seed}")
        rte = bool(options["rte"] or rte_cfg.enabled)
        if rte:
            env["K_RTE__ENABLED"] = "true"
            env["K_RTE__FLEET_ID"] = rte_cfg.fleet_id or DEMO_FLEET
            where = rte_cfg.api_url if rte_cfg.mode == "client" else f"mock on {rte_cfg.mock.address}"
            self.say(f"RTE connector: {rte_cfg.mode} mode, {where}, every {rte_cfg.poll_interval_seconds} s")
        return generator, rte

    def _run(self, stop: threading.Event, duration: float, signal_every: float, seed: int) -> None:
        deadline = time.monotonic() + duration if duration else None
        rng = random.Random(seed)
        next_signal = time.monotonic() + min(10.0, signal_every) if signal_every else None
        watching: list[str] = []
        while not stop.is_set():
            dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
            if dead:
                raise CommandError(
                    f"{', '.join(dead)} stopped unexpectedly; see {self.log_dir}/{dead[0]}.log"
                )
            if deadline and time.monotonic() > deadline:
                break
            if next_signal and time.monotonic() >= next_signal:
                watching.append(self._demo_signal(rng))
                next_signal = time.monotonic() + signal_every
            watching = [d for d in watching if not self._summarise(d)]
            stop.wait(0.5)

    # --- embedded services -----------------------------------------------------

    def _reexec_with_config(self, path: str) -> None:
        """Settings were read before this command ran: run again with the file as $V2G_CONFIG."""
        if not os.path.isfile(path):
            raise CommandError(f"config file {path} (from -c/--config) does not exist")
        os.environ["V2G_CONFIG"] = os.path.abspath(path)
        argv, args = [sys.executable, sys.argv[0]], iter(sys.argv[1:])
        for arg in args:
            if arg in ("-c", "--config"):
                next(args, None)
            elif not arg.startswith("--config="):
                argv.append(arg)
        sys.stdout.flush()
        os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and arguments

    def _resolve_and_reexec(self) -> None:
        """Pick embedded stand-ins for unreachable servers, then run again so that
        settings (read once, at start) and every child see the same choice."""
        argv = [sys.executable, *sys.argv, "--resolved"]
        try:
            health.check_broker(2.0)
            self.say(f"Celery broker: {health._where(settings.CELERY_BROKER_URL)}")
        except ConnectionError:
            self.say(
                f"Celery broker {health._where(settings.CELERY_BROKER_URL)} not reachable: "
                "using the embedded filesystem transport (var/celery)"
            )
            os.environ["CELERY_BROKER_URL"] = "filesystem://"
        try:
            health.check_mqtt(2.0)
            self.say(f"MQTT broker: {health._where(settings.V2G.mqtt.url)}")
        except Exception:  # noqa: BLE001 - unreachable, refused: an embedded broker it is
            endpoint = mqtt.endpoint_parse(settings.V2G.mqtt)
            port = endpoint.port if endpoint.host in ("127.0.0.1", "localhost") else _free_port()
            self.say(f"MQTT broker {endpoint.host}:{endpoint.port} not reachable: starting an embedded one")
            os.environ["K_MQTT__URL"] = f"tcp://127.0.0.1:{port}"
            argv.append("--embedded-mqtt")
        sys.stdout.flush()
        os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and arguments

    def _start_embedded_mqtt(self) -> None:
        endpoint = mqtt.endpoint_parse(settings.V2G.mqtt)
        amqtt = Path(sys.executable).with_name("amqtt")
        if not amqtt.exists():
            raise CommandError(
                "no MQTT broker reachable and amqtt is not installed (pip install -r requirements-demo.txt)"
            )
        conf = self.base / "var" / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{endpoint.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        self._start("mqtt-broker", [str(amqtt), "-c", str(conf)], {**os.environ})
        deadline = time.monotonic() + 20
        while True:
            try:
                health.check_mqtt(1.0)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"the embedded MQTT broker did not start; see {self.log_dir}/mqtt-broker.log"
                    ) from None
                time.sleep(0.2)
        self.say(f"embedded MQTT broker (amqtt) on 127.0.0.1:{endpoint.port}")

    def _simulator_command(self, vehicles: int, seed: int) -> list[str]:
        cfg = settings.V2G.mqtt
        return [
            *(sys.executable, "-m", "simulator", "--count", str(vehicles), "--prefix", "demo-ev-"),
            *("--url", cfg.url, "--seed", str(seed), "--telemetry-interval-s", "5"),
            *("--status-interval-s", "30", "--ack-latency-ms-min", "5", "--ack-latency-ms-max", "80"),
            *("--drop-rate", "0.03", "--reject-rate", "0.02", "--v2g-share", "1"),
            # Commuters are away by day: a share that is always plugged keeps the demo busy at any hour.
            *("--profiles", "commuter=0.4,captive=0.2,opportunistic=0.1,always=0.3"),
        ]  # fmt: skip

    # --- demo signals ------------------------------------------------------------

    def _demo_signal(self, rng: random.Random) -> str:
        from dispatch import services

        power = round(rng.uniform(0.05, 0.25) * Vehicle.objects.filter(fleet_id=DEMO_FLEET).count() * 7.4, 1)
        power *= rng.choice((1, 1, -1))
        _signal, dispatch = services.signal_submit(
            signal_type="FCR", power_kw=power, duration_s=rng.choice((120, 300, 600)), fleet_id=DEMO_FLEET,
            source="cli",
        )  # fmt: skip
        self.say(f"signal FCR {power:+.1f} kW submitted (dispatch {dispatch.id})")
        return str(dispatch.id)

    def _summarise(self, dispatch_id: str) -> bool:
        from dispatch import selectors

        detail = selectors.dispatch_detail(dispatch_id)
        if detail is None or detail["status"] == "in_progress":
            return False
        commands = detail["commands"]
        acked = [c for c in commands if c["status"] == "acked"]
        latencies = sorted(c["latency_s"] for c in acked if c["latency_s"] is not None)
        p50 = f"{latencies[len(latencies) // 2] * 1000:.0f} ms" if latencies else "-"
        vehicles, rounds = len({c["vehicle_id"] for c in commands}), len(detail["rounds"])
        self.say(
            f"dispatch {detail['status']}: {detail['signal'].signal_type} {detail['requested_kw']:+.1f} kW, "
            f"{vehicles} vehicles, {len(acked)}/{len(commands)} commands acked, "
            f"{detail['acknowledged_kw']:+.1f} kW acknowledged, p50 latency {p50}, {rounds} round(s)"
        )
        return True

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
        # A fresh API token each run (the last one is revoked): only its hash is kept.
        fleet_services.api_token_revoke(
            token_ids=ApiToken.objects.filter(name=DEMO_TOKEN_NAME).values_list("pk", flat=True)
        )
        _token, self.api_token = fleet_services.api_token_create(name=DEMO_TOKEN_NAME, all_fleets=True)

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
            f"  API      {url}/api/   (curl -H 'Authorization: Bearer {self.api_token}' {url}/api/fleets/)\n"
            f"  metrics  {url}/metrics\n"
            f"  health   {url}/readyz   (readiness; {url}/healthz: liveness)\n"
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
