"""The durable dispatch log (SPEC §9), with two backends chosen by
``logging.backend``:

- ``sqlite``: the Django database (table of DispatchLogEntry, whatever the
  database engine is), idempotent by command id;
- ``jsonl``: one JSON object per line in ``logging.jsonl_path``, rotated at
  ``max_size_mb`` keeping ``max_backups`` files, backups older than
  ``max_age_days`` deleted. Several worker processes append to the same file:
  concurrent-log-handler's lock makes writes and rotation safe across processes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

from dispatch.models import DispatchLogEntry

FIELDS = (
    "at",
    "dispatch_id",
    "signal_id",
    "signal_type",
    "target_kw",
    "vehicle_id",
    "command_id",
    "allocated_kw",
    "setpoint_kw",
    "status",
    "acknowledged",
    "ack_latency_s",
    "fallback_round",
    "score",
)

_jsonl_lock = threading.Lock()
_jsonl_logger: logging.Logger | None = None
_jsonl_path: Path | None = None


def _jsonl() -> logging.Logger:
    global _jsonl_logger, _jsonl_path
    from concurrent_log_handler import ConcurrentRotatingFileHandler

    cfg = settings.V2G.logging
    path = Path(cfg.jsonl_path)
    path = path if path.is_absolute() else Path(settings.BASE_DIR) / path
    with _jsonl_lock:
        if _jsonl_logger is None or _jsonl_path != path:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = ConcurrentRotatingFileHandler(
                str(path),
                maxBytes=cfg.max_size_mb * 1024 * 1024,
                backupCount=cfg.max_backups,
                encoding="utf-8",
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger = logging.Logger("v2g.dispatch_log.jsonl")  # private: never propagates to the console
            logger.addHandler(handler)
            _jsonl_logger, _jsonl_path = logger, path
        return _jsonl_logger


def _purge_old_backups(path: Path, max_age_days: int) -> None:
    cutoff = time.time() - max_age_days * 86400
    for backup in path.parent.glob(path.name + ".*"):
        if backup.suffix != ".lock" and backup.stat().st_mtime < cutoff:
            backup.unlink(missing_ok=True)


def dispatch_log_write(records: Sequence[dict]) -> None:
    """Append records (dicts with FIELDS). Idempotent for the database backend."""
    if not records:
        return
    cfg = settings.V2G.logging
    if cfg.backend == "jsonl":
        logger = _jsonl()
        for record in records:
            logger.info(json.dumps({key: _plain(record[key]) for key in FIELDS}, separators=(",", ":")))
        _purge_old_backups(_jsonl_path, cfg.max_age_days)
        return
    DispatchLogEntry.objects.bulk_create(
        [DispatchLogEntry(**{key: record[key] for key in FIELDS}) for record in records],
        ignore_conflicts=True,  # a second finalisation of the same round adds nothing
        batch_size=2000,
    )


def _plain(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is not None and not isinstance(value, bool | int | float | str):
        return str(value)
    return value
