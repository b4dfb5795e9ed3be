"""Process logs: the log context, its filter and both formatters (no database),
and the settings' JSON format in a real process."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import datetime

import pytest
from celery import Celery

from tests.conftest import ROOT, subprocess_env
from v2g_project.logcontext import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    current,
    exception_context,
    log_bind,
    log_context,
)

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


@pytest.fixture
def capture():
    """capture(formatter) -> (logger, stream): a logger whose handler carries the
    context filter, as the settings' handler does."""
    made = []

    def _capture(formatter: logging.Formatter):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(ContextFilter())
        handler.setFormatter(formatter)
        logger = logging.getLogger("v2g.test.logging")
        logger.handlers = []
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, stream

    yield _capture
    for logger, handler in made:
        logger.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_text_lines_say_what_they_are_about(capture):
    log, stream = capture(TextFormatter(TEXT_FORMAT))
    log.info("outside")
    with log_context(dispatch_id="d-1", signal_type="FCR"):
        log.info("allocated")
        with log_context(vehicle_id="ev-7"):
            log.warning("no ack from %s", "ev-7")
        log.info("finalised")
    assert stream.getvalue().splitlines() == [
        "INFO v2g.test.logging: outside",
        "INFO v2g.test.logging: allocated [dispatch=d-1 signal=FCR]",
        "WARNING v2g.test.logging: no ack from ev-7 [dispatch=d-1 vehicle=ev-7 signal=FCR]",
        "INFO v2g.test.logging: finalised [dispatch=d-1 signal=FCR]",
    ]


def test_extra_wins_over_the_context_and_none_is_skipped(capture):
    log, stream = capture(TextFormatter(TEXT_FORMAT))
    with log_context(dispatch_id="d-1", vehicle_id=None):
        log.info("late ack", extra={"vehicle_id": "ev-2", "dispatch_id": "d-0"})
    assert stream.getvalue().strip() == "INFO v2g.test.logging: late ack [dispatch=d-0 vehicle=ev-2]"


def test_bind_adds_to_the_innermost_block_only_and_nothing_outside_one():
    log_bind(signal_type="FCR")  # no block: must not stick to whatever runs next
    assert current() == {}
    with log_context(dispatch_id="d-1"):
        with log_context(vehicle_id="ev-1"):
            log_bind(signal_type="aFRR")
            assert current() == {"dispatch_id": "d-1", "vehicle_id": "ev-1", "signal_type": "aFRR"}
        assert current() == {"dispatch_id": "d-1"}
        log_bind(signal_type="FCR")
        assert current() == {"dispatch_id": "d-1", "signal_type": "FCR"}
    assert current() == {}


def test_an_exception_carries_the_context_it_was_raised_in(capture):
    log, stream = capture(JsonFormatter())
    try:
        with log_context(dispatch_id="d-9"):
            log_bind(signal_type="NEBEF")
            with log_context(vehicle_id="ev-3"):
                raise ValueError("planned setpoint is not finite")
    except ValueError as exc:
        assert exception_context(exc) == {"dispatch_id": "d-9", "signal_type": "NEBEF", "vehicle_id": "ev-3"}
        log.exception("task failed")  # outside every block, as Celery or the bridge logs it
    (line,) = json_lines(stream)
    assert line["dispatch_id"] == "d-9" and line["vehicle_id"] == "ev-3" and line["signal_type"] == "NEBEF"
    assert "ValueError: planned setpoint is not finite" in line["exc_info"]
    assert current() == {}


def test_json_is_one_object_per_line_with_the_fields_that_apply(capture):
    log, stream = capture(JsonFormatter())
    log.info("plain\nwith a second line")
    with log_context(dispatch_id="d-1", vehicle_id="ev-1", signal_type="mFRR"):
        log.error("publish failed for %d command(s)", 1)
    plain, about = json_lines(stream)
    assert list(plain)[:4] == ["time", "level", "logger", "process"]
    assert plain["message"] == "plain\nwith a second line" and plain["level"] == "INFO"
    assert not {"dispatch_id", "vehicle_id", "signal_type", "task", "task_id"} & set(plain)
    assert datetime.fromisoformat(plain["time"]).utcoffset().total_seconds() == 0
    assert about["logger"] == "v2g.test.logging"
    assert about["message"] == "publish failed for 1 command(s)"
    assert (about["level"], about["dispatch_id"], about["vehicle_id"], about["signal_type"]) == (
        "ERROR", "d-1", "ev-1", "mFRR",
    )  # fmt: skip


def test_celery_task_name_and_id_on_lines_logged_in_a_task_and_by_celery(capture):
    log, stream = capture(JsonFormatter())
    app = Celery("logging-test", set_as_current=False)

    @app.task(name="v2g-test.allocate")
    def allocate(dispatch_id: str) -> None:
        with log_context(dispatch_id=dispatch_id):
            log.info("allocated")

    allocate.apply(args=["d-5"], task_id="t-123")
    # Celery's own line about a task, logged outside it (the worker's "received").
    handler = log.handlers[-1]
    logging.getLogger("celery.worker.strategy").addHandler(handler)
    try:
        logging.getLogger("celery.worker.strategy").info(
            "Task %(name)s[%(id)s] received", {"name": "dispatch.collect", "id": "t-456"}
        )
    finally:
        logging.getLogger("celery.worker.strategy").removeHandler(handler)
    inside, received = json_lines(stream)
    assert (inside["task"], inside["task_id"], inside["dispatch_id"]) == ("v2g-test.allocate", "t-123", "d-5")
    assert (received["task"], received["task_id"]) == ("dispatch.collect", "t-456")
    log.info("after the task")
    assert "task" not in json_lines(stream)[-1]


LOG_SCRIPT = """
import logging, django
django.setup()
from v2g_project.logcontext import log_context
with log_context(dispatch_id="d-42", signal_type="FCR", vehicle_id="ev-9"):
    logging.getLogger("dispatch.services").info("dispatch %s allocated", "d-42")
logging.getLogger("v2g.bridge").warning("plain")
"""


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_configured_format_in_a_real_process(fmt):
    """logging.format from the configuration (here K_LOGGING__FORMAT) picks the
    format of the settings' handler: JSON in production, text in development."""
    result = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT],
        cwd=ROOT,
        env=subprocess_env(K_LOGGING__FORMAT=fmt, K_SENTRY__DSN=""),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stderr.strip().splitlines()
    if fmt == "text":
        assert lines[0].endswith(
            "INFO MainProcess dispatch.services: dispatch d-42 allocated [dispatch=d-42 vehicle=ev-9 signal=FCR]"
        )
        assert lines[1].endswith("WARNING MainProcess v2g.bridge: plain")
        return
    about, plain = (json.loads(line) for line in lines)
    assert {k: about[k] for k in ("level", "logger", "message", "dispatch_id", "vehicle_id", "signal_type")} == {
        "level": "INFO", "logger": "dispatch.services", "message": "dispatch d-42 allocated",
        "dispatch_id": "d-42", "vehicle_id": "ev-9", "signal_type": "FCR",
    }  # fmt: skip
    assert datetime.fromisoformat(about["time"]).tzinfo is not None
    assert plain["logger"] == "v2g.bridge" and "dispatch_id" not in plain
