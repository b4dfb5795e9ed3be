"""Log context: what a log line (or a Sentry event) is about.

``with log_context(dispatch_id=..., vehicle_id=...)`` binds fields for the code
inside the block (a context variable: per thread, per asyncio task); the
:class:`ContextFilter` on the log handler copies them onto every record, with
the Celery task's name and id when a task is running. The text formatter shows
them compactly after the message, the JSON formatter as fields. A field given
with ``extra=`` on one log call wins over the context.

An exception that leaves a ``log_context`` block carries the fields it was
raised with (:func:`exception_context`): the line that logs it later, outside
the block (a Celery failure, the bridge's "route failed"), and the Sentry event
(see ``v2g_project.observability``) still name the dispatch and the vehicle.

Pure module: no Django, no Sentry; Celery only if it is already imported.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# The fields of SPEC §9 that a line may be about, in the order the text shows them.
FIELDS = ("dispatch_id", "vehicle_id", "signal_type")
TASK_FIELDS = ("task", "task_id")
_SHORT = {"dispatch_id": "dispatch", "vehicle_id": "vehicle", "signal_type": "signal"}

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("v2g_log_context", default=_EMPTY)
_EXC_ATTR = "_v2g_log_context"


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind ``fields`` (None values are skipped) for the block, on top of the
    fields already bound; restored on exit, even when the block raises."""
    values = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(values)
    try:
        yield
    except BaseException as exc:
        # The innermost block sees the most fields (log_bind included): it wins.
        if not hasattr(exc, _EXC_ATTR):
            with suppress(AttributeError, TypeError):  # an exception type without a __dict__
                setattr(exc, _EXC_ATTR, dict(_context.get()))
        raise
    finally:
        _context.reset(token)


def log_bind(**fields: object) -> None:
    """Add fields to the innermost ``log_context`` block, for the rest of it
    (e.g. the signal type once the dispatch has been read). Outside any block it
    does nothing: a binding must never outlive the unit of work it describes."""
    values = _context.get()
    if values is _EMPTY:
        return
    values.update({k: str(v) for k, v in fields.items() if v is not None})  # type: ignore[attr-defined]


def current() -> dict[str, str]:
    """The fields bound here and now."""
    return dict(_context.get())


def exception_context(exc: BaseException | None) -> dict[str, str]:
    """The fields bound where ``exc`` was raised (empty when none were)."""
    return dict(getattr(exc, _EXC_ATTR, None) or {}) if exc is not None else {}


def _celery_task() -> tuple[str, str] | None:
    state = sys.modules.get("celery._state")  # never import Celery for a log line
    task = state.get_current_task() if state is not None else None
    if task is None:
        return None
    return task.name, (task.request.id or "")


class ContextFilter(logging.Filter):
    """Adds the bound fields and the running Celery task to each record (never
    overriding what ``extra=`` set). Attach it to handlers, so that records of
    every logger passing through them get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        for source in (_context.get(), exception_context(exc)):
            for key, value in source.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        if not hasattr(record, "task"):
            running = _celery_task()
            if running is None and record.name.startswith("celery."):
                # Celery's own lines about a task (received, succeeded, failed)
                # carry it in their arguments, outside the task.
                data = getattr(record, "data", None) or record.args
                if isinstance(data, Mapping) and data.get("name") and data.get("id"):
                    running = (str(data["name"]), str(data["id"]))
            if running is not None:
                record.task, record.task_id = running
        return True


def context_text(record: logging.LogRecord) -> str:
    """``dispatch=… vehicle=… signal=… task=name[id]``: what the record is about."""
    parts = [f"{_SHORT.get(k, k)}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None)]
    task = getattr(record, "task", None)
    if task:
        task_id = getattr(record, "task_id", "")
        parts.append(f"task={task}[{task_id}]" if task_id else f"task={task}")
    return " ".join(parts)


class TextFormatter(logging.Formatter):
    """Readable lines for development: the usual prefix and message, then what
    the line is about in brackets, before any traceback."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        about = context_text(record)
        return f"{line} [{about}]" if about else line


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``process``, ``message``, then the context fields that apply and any other
    ``extra=`` fields; ``exc_info`` holds a traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s")
        kwargs.setdefault(
            "rename_fields",
            {"asctime": "time", "levelname": "level", "name": "logger", "processName": "process"},
        )
        super().__init__(*args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
