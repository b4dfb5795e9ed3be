"""``python manage.py rte_generate [--scenario NAME] [--count N] [--speed X] [--fleet ID] [--seed N]``

Runs the synthetic RTE signal generator (config ``rteGenerator``, issue 10)
until Ctrl-C / SIGTERM, or until ``--count`` signals were handled.
"""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dispatch.generator import SCENARIOS, GeneratorError
from dispatch.generator_runner import generator_run


class Command(BaseCommand):
    help = "Emit synthetic RTE signals of a scenario through the dispatch pipeline."

    def add_arguments(self, parser):
        parser.add_argument(
            "--scenario", choices=SCENARIOS, help="Scenario (default rteGenerator.scenario of the config)."
        )
        parser.add_argument(
            "--count", type=int, help="Stop after this many signals (default: run until stopped)."
        )
        parser.add_argument(
            "--speed", type=float, default=1.0, help="Play the scenario this many times faster (default 1)."
        )
        parser.add_argument("--fleet", dest="fleet_id", help="Only this fleet's vehicles.")
        parser.add_argument("--seed", type=int, help="Random seed (default rteGenerator.seed).")

    def handle(self, *args, scenario, count, speed, fleet_id, seed, **options):
        if (count is not None and count < 0) or not speed > 0:
            raise CommandError("--count must be >= 0 and --speed > 0")
        cfg = settings.V2G.rte_generator
        if seed is not None:
            cfg = cfg.model_copy(update={"seed": seed})
        scenario = scenario or cfg.scenario
        if scenario == "replay" and not cfg.replay_file:
            raise CommandError(
                "scenario 'replay' needs rteGenerator.replay_file (K_RTEGENERATOR__REPLAY_FILE)"
            )
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            run = generator_run(
                stop,
                scenario=scenario,
                cfg=cfg,
                count=count,
                speed=speed,
                fleet_id=fleet_id,
                on_emit=lambda at, kind, kw, s: self.stdout.write(
                    f"[rte-gen] {at.isoformat()} {kind} {kw:+.3f} kW for {s:.0f} s"
                ),
            )
        except GeneratorError as exc:
            raise CommandError(str(exc)) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(f"[rte-gen] stopped: {run.emitted} signal(s) submitted, {run.errors} error(s)")
