"""Liveness files for the processes that have no port to probe: Celery Beat and
the MQTT bridge touch a file while they work; a health check reads its age.

    python -m v2g_project.heartbeat var/run/beat.alive --max-age 60

exits 0 when the file was touched within ``--max-age`` seconds, 1 otherwise
(with a one-line reason). Pure standard library, no Django: it costs a
docker-compose health check a few milliseconds, and writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def resolve(path: str | Path) -> Path:
    """A relative path is under the project directory (like the other var/ paths)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path


def touch(path: Path) -> None:
    """Mark the process alive now (creating the file and its directory if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


def age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last touch, or None when there is no file."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - mtime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m v2g_project.heartbeat",
        description="Exit 0 when a heartbeat file is fresh (Beat, MQTT bridge), else 1.",
    )
    parser.add_argument("path", help="the heartbeat file (relative: under the project directory)")
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    path = resolve(args.path)
    age = age_s(path)
    if age is None:
        print(f"DOWN no heartbeat: {path} does not exist (process not started, or never healthy)")
        return 1
    if age > args.max_age:
        print(f"DOWN stale heartbeat: {path} last touched {age:.0f} s ago (max {args.max_age:g} s)")
        return 1
    print(f"ok   {path} touched {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
