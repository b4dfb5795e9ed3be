"""``python manage.py rte_connector [--polls N]``: the RTE connector (config ``rte``, issue 10).

In ``client`` mode it polls the real API (``rte.token_url``, ``rte.api_url``).
In ``mock`` mode it first starts the mock RTE server on ``rte.mock.address``,
publishing the ``rte.mock.scenario`` generator scenario as activations, and
polls that with the very same client. Runs until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dispatch.generator import GeneratorError, signals_iter
from dispatch.rte_client import RteClient
from dispatch.rte_connector import rte_connector_run
from dispatch.rte_mock import ACTIVATIONS_PATH, TOKEN_PATH, MockRte
from fleet.models import Fleet


class Command(BaseCommand):
    help = "Poll RTE's activation API (or the mock RTE server) and dispatch each activation."

    def add_arguments(self, parser):
        parser.add_argument(
            "--polls", type=int, help="Stop after this many polls (default: run until stopped)."
        )

    def handle(self, *args, polls, **options):
        cfg = settings.V2G.rte
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per poll is the connector's own
        if polls is not None and polls < 1:
            raise CommandError("--polls must be >= 1")
        if cfg.fleet_id and not Fleet.objects.filter(id=cfg.fleet_id).exists():
            raise CommandError(f"rte.fleet_id: no fleet {cfg.fleet_id!r}")
        server = None
        if cfg.mode == "mock":
            server = self._mock_start(cfg)
            client = RteClient(
                token_url=server.token_url,
                api_url=server.api_url,
                client_id=cfg.mock.client_id,
                client_secret=cfg.mock.client_secret,
                timeout_s=cfg.timeout_seconds,
            )
        else:
            client = RteClient(
                token_url=cfg.token_url,
                api_url=cfg.api_url,
                client_id=cfg.client_id,
                client_secret=cfg.client_secret.get_secret_value(),
                timeout_s=cfg.timeout_seconds,
            )
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.stdout.write(
            f"[rte] {cfg.mode} mode: polling {client.api_url} every {cfg.poll_interval_seconds} s"
        )
        try:
            made = rte_connector_run(
                stop,
                client,
                cfg=cfg,
                polls=polls,
                on_poll=lambda result, delay: self.stdout.write(
                    f"[rte] poll: {result}, next in {delay:.1f} s"
                    if result
                    else f"[rte] poll failed, retry in {delay:.1f} s"
                ),
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            client.close()
            if server:
                server.close()
        self.stdout.write(f"[rte] stopped after {made} poll(s)")

    def _mock_start(self, cfg):
        host, _, port = cfg.mock.address.rpartition(":")
        mock = MockRte(
            client_id=cfg.mock.client_id,
            client_secret=cfg.mock.client_secret,
            token_ttl_s=cfg.mock.token_ttl_seconds,
        )
        start = datetime.now(UTC)
        gen_cfg = settings.V2G.rte_generator
        if cfg.mock.scenario == "replay" and not gen_cfg.replay_file:
            raise CommandError("rte.mock.scenario 'replay' needs rteGenerator.replay_file")
        try:
            mock.feed(signals_iter(gen_cfg, cfg.mock.scenario, start), prefix=f"MOCK-{start:%Y%m%dT%H%M%SZ}")
        except GeneratorError as exc:
            raise CommandError(f"rte.mock.scenario: {exc}") from None
        try:
            server = mock.serve(host, int(port))
        except OSError as exc:
            raise CommandError(
                f"rte.mock.address: cannot listen on {cfg.mock.address}: {exc.strerror}"
            ) from None
        self.stdout.write(
            f"[rte] mock RTE server on {server.url} (token {TOKEN_PATH}, activations {ACTIVATIONS_PATH}), "
            f"scenario {cfg.mock.scenario}"
        )
        return server
