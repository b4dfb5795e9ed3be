"""The dispatch log backends (SPEC §9)."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from django.utils import timezone

from dispatch.log import FIELDS, dispatch_log_write
from dispatch.models import DispatchLogEntry
from tests.conftest import replace


def record(**changes) -> dict:
    base = {
        "at": timezone.now(), "dispatch_id": uuid.uuid4(), "signal_id": uuid.uuid4(), "signal_type": "FCR",
        "target_kw": 20.0, "vehicle_id": "ev-1", "command_id": uuid.uuid4(), "allocated_kw": 5.0,
        "setpoint_kw": 5.0, "status": "acked", "acknowledged": True, "ack_latency_s": 0.012,
        "fallback_round": 0, "score": 1.0,
    }  # fmt: skip
    return {**base, **changes}


@pytest.fixture
def jsonl(settings, tmp_path):
    def configure(**logging):
        settings.V2G = replace(
            settings.V2G, logging=replace(settings.V2G.logging, backend="jsonl", **logging)
        )
        return tmp_path / "dispatch.jsonl"

    return configure


@pytest.mark.django_db
def test_database_backend_is_idempotent_by_command_id():
    records = [record(vehicle_id=f"ev-{n}") for n in range(3)]
    dispatch_log_write(records)
    dispatch_log_write(records)  # a second finalisation of the same round
    assert DispatchLogEntry.objects.count() == 3
    entry = DispatchLogEntry.objects.get(vehicle_id="ev-1")
    assert entry.acknowledged and entry.ack_latency_s == pytest.approx(0.012)


def test_jsonl_lines_have_every_field(jsonl, tmp_path):
    path = tmp_path / "log" / "dispatch.jsonl"
    jsonl(jsonl_path=str(path))
    dispatch_log_write([record(vehicle_id="ev-7", ack_latency_s=None)])
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert set(line) == set(FIELDS)
    assert line["vehicle_id"] == "ev-7" and line["ack_latency_s"] is None and line["acknowledged"] is True
    assert line["at"].endswith("+00:00")


def test_jsonl_rotates_by_size_keeps_backups_and_purges_old_ones(jsonl, tmp_path):
    path = tmp_path / "dispatch.jsonl"
    jsonl(jsonl_path=str(path), max_size_mb=1, max_backups=2, max_age_days=1)
    stale = tmp_path / "dispatch.jsonl.9"
    stale.write_text("{}\n")
    old = time.time() - 3 * 86400
    os.utime(stale, (old, old))
    for _ in range(12):
        dispatch_log_write([record(vehicle_id="x" * 60) for _ in range(400)])  # ~0.2 MB a call
    backups = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dispatch.jsonl."))
    assert "dispatch.jsonl.1" in backups and "dispatch.jsonl.2" in backups
    assert "dispatch.jsonl.3" not in backups  # max_backups
    assert "dispatch.jsonl.9" not in backups  # older than max_age_days
    assert path.stat().st_size <= 1024 * 1024
