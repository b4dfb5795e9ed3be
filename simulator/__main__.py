"""``python -m simulator``: run a fleet until Ctrl-C, SIGTERM or ``--duration-s``.

Exit status: 0 on a clean stop, 1 when the broker cannot be reached, 2 on a
bad option. Status lines go to stdout, problems to stderr.

    python -m simulator --count 500 --seed 1 --drop-rate 0.05 --telemetry-interval-s 30
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence

from simulator import config
from simulator.fleet import Fleet
from v2g_project import mqtt


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config.parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    fleet = Fleet(cfg)
    try:
        fleet.start()
    except mqtt.MqttUnavailable as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    try:
        # Short waits: the signal handler runs on this thread between them.
        deadline = time.monotonic() + cfg.duration_s if cfg.duration_s > 0 else math.inf
        while not stop.is_set() and time.monotonic() < deadline:
            stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
