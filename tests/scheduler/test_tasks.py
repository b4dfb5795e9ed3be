"""The scheduler's Beat jobs: registered in django-celery-beat; the D+1 run
idempotent and loud on failure; and the execution of an approved plan end to
end with the real worker, the real MQTT bridge and simulated vehicles
(``python -m simulator``) over the real broker."""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import subprocess
import sys
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from fleet.models import Fleet, Vehicle
from scheduler import domain, selectors, services, tasks
from scheduler.models import Plan, PlanSource, PlanStatus
from telemetry.models import VehicleState
from tests.conftest import ROOT, stop_process, subprocess_env, wait_for
from tests.scheduler.plans import commuter_profile, scheduler_config, stored_plan, vehicle

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.django_db
def test_the_beat_jobs_are_registered_and_editable_in_the_admin(admin_client):
    plan = PeriodicTask.objects.get(name="scheduler: plan D+1")
    assert plan.task == "scheduler.plan_next_day" and plan.enabled
    crontab = plan.crontab
    assert (crontab.hour, crontab.minute, str(crontab.timezone)) == ("12", "0", "Europe/Paris")  # run_at
    execute = PeriodicTask.objects.get(name="scheduler: execute the approved plan")
    assert execute.task == "scheduler.execute_slot" and execute.enabled
    assert (execute.crontab.minute, str(execute.crontab.timezone)) == ("*/15", "UTC")
    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{plan.id}/change/")
    assert page.status_code == 200 and b"scheduler.plan_next_day" in page.content


@pytest.mark.django_db
def test_the_daily_run_plans_tomorrow_once_per_inputs(settings):
    fleet = Fleet.objects.create(id="f", name="F")
    vehicle("ev-1", fleet, profile=commuter_profile())
    first = tasks.plan_next_day_task.apply().get()
    tomorrow = timezone.now().astimezone(PARIS).date() + timedelta(days=1)
    assert first["day"] == tomorrow.isoformat() and first["created"] and first["version"] == 1
    again = tasks.plan_next_day_task.apply().get()
    assert again == {**first, "created": False}
    plan = Plan.objects.get()
    assert (plan.source, plan.status) == (PlanSource.BEAT, PlanStatus.DRAFT)


@pytest.mark.django_db
def test_a_failed_run_is_logged_with_its_reason_and_raised(settings, caplog):
    scheduler_config(settings, target_profile_kw=[1.0, 2.0])
    with caplog.at_level(logging.ERROR, logger="scheduler.tasks"), pytest.raises(services.PlanError):
        tasks.plan_next_day_task.apply(throw=True).get()
    assert "day-ahead planning failed: PlanError: scheduler.target_profile_kw has 2 value(s)" in caplog.text
    assert not Plan.objects.exists()


@pytest.mark.django_db
def test_plan_day_command(settings):
    fleet = Fleet.objects.create(id="f", name="F")
    vehicle("ev-1", fleet, profile=commuter_profile())
    day = (timezone.now().astimezone(PARIS) + timedelta(days=2)).date()
    out = io.StringIO()
    call_command("plan_day", "--day", day.isoformat(), "--fleet", "f", stdout=out)
    assert f"plan {day} v1 (draft) created" in out.getvalue()
    out = io.StringIO()
    call_command("plan_day", "--day", day.isoformat(), "--fleet", "f", stdout=out)
    assert f"plan {day} v1 (draft) unchanged (same inputs)" in out.getvalue()
    assert Plan.objects.get().fleet_id == "f"
    with pytest.raises(CommandError, match="fleet: no fleet 'nope'"):
        call_command("plan_day", "--day", day.isoformat(), "--fleet", "nope")
    with pytest.raises(CommandError, match="not a date: '2025-02-30'"):
        call_command("plan_day", "--day", "2025-02-30")


# --- execution end to end ----------------------------------------------------------------------


@pytest.fixture
def simulated(tmp_path):
    """start(count) -> vehicle ids: simulated vehicles (always plugged in, pushing
    their state every second), registered in the database."""
    procs = []

    def start(count: int) -> list[str]:
        prefix = f"t{secrets.token_hex(3)}-ev-"
        fleet = Fleet.objects.create(id=f"{prefix}fleet", name="simulated")
        ids = [f"{prefix}{n:04d}" for n in range(count)]
        Vehicle.objects.bulk_create(
            Vehicle(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=7, max_discharge_kw=7) for vid in ids
        )
        log_path = tmp_path / f"sim-{prefix}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "simulator", "--count", str(count), "--prefix", prefix,
                    "--profiles", "always=1", "--telemetry-interval-s", "1", "--status-interval-s", "0",
                    "--seed", "11", "--lwt-topic-prefix", "",  # no will: nothing left retained on the broker
                ],
                cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)
        wait_for(lambda: "sim ready" in log_path.read_text() or proc.poll() is not None, 30, "the simulator")
        assert proc.poll() is None, log_path.read_text()
        return ids

    yield start
    for proc in procs:
        stop_process(proc)


def slot_with_time_left(min_left_s: float = 60.0) -> tuple:
    """Today, the slot under way and its start, once at least ``min_left_s`` of it remain."""

    def current():
        now = timezone.now()
        today = now.astimezone(PARIS).date()
        starts = domain.day_slots(today, "Europe/Paris", 15)
        k = max(i for i, start in enumerate(starts) if start <= now)
        if starts[k] + timedelta(minutes=15) - now < timedelta(seconds=min_left_s):
            return None
        return today, k, starts[k]

    return wait_for(current, min_left_s + 15, "a slot with time left", interval_s=1.0)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_an_approved_plan_is_executed_with_exactly_its_setpoints(
    celery_worker, mqtt_bridge, simulated, django_user_model
):
    ids = simulated(5)
    states = VehicleState.objects.filter(vehicle_id__in=ids, plugged_in=True)
    wait_for(lambda: states.count() == len(ids), 30, "every simulated vehicle's state")
    # Discharge the fullest two, charge the emptiest; one planned vehicle has vanished
    # (registered, never heard of: unavailable at execution time).
    by_soc = sorted(states.values_list("soc", "vehicle_id"))
    (_s, charged), *_rest, (_s1, up1), (_s2, up2) = by_soc
    ghost = Vehicle.objects.create(id=f"{ids[0]}-ghost", fleet_id=Vehicle.objects.get(id=ids[0]).fleet_id,
                                   battery_kwh=60, max_charge_kw=7, max_discharge_kw=7)  # fmt: skip
    today, k, start = slot_with_time_left()
    planned = {up1: 2.0, up2: 3.0, charged: -1.5, ghost.id: 1.0}
    plan = stored_plan(today, {(k, vid): kw for vid, kw in planned.items()})
    operator = django_user_model.objects.create_user("operator", is_staff=True)
    services.plan_approve(plan.id, user=operator)

    report = tasks.plan_execute_task.delay().get(timeout=30)  # the Beat job, run by the real worker
    assert report["outcome"] == "submitted" and report["slot"] == k and report["power_kw"] == 4.5
    assert tasks.plan_execute_task.delay().get(timeout=30)["outcome"] == "already_executed"
    signal = FlexibilitySignal.objects.get()
    assert (signal.signal_type, signal.start_at, signal.external_id) == (
        "NEBEF",
        start,
        f"plan:{plan.id}:{k}",
    )

    # Round 0 sends exactly the planned setpoints to the planned vehicles that are there.
    first = wait_for(
        lambda: (
            Dispatch.objects.filter(signal=signal, round=0).exclude(status=DispatchStatus.PENDING).first()
        ),
        30,
        "the allocation",
    )
    assert first.strategy == "planned"
    assert first.excluded == {ghost.id: "unavailable"}
    commands = dict(Command.objects.filter(dispatch=first).values_list("vehicle_id", "power_kw"))
    assert commands == {up1: 2.0, up2: 3.0, charged: -1.5}

    # All three ack; the ghost's 1 kW goes to fallback, which the vehicles that acked take.
    def delivered():
        rows = selectors.plan_delivery(plan)["slots"]
        return rows[k] if rows[k]["status"] not in ("in_progress", "not_executed") else None

    row = wait_for(delivered, 60, "the slot's delivery to finish")
    assert set(Command.objects.filter(dispatch=first).values_list("status", flat=True)) == {
        CommandStatus.ACKED
    }
    fallback = Dispatch.objects.get(signal=signal, round=1)
    assert fallback.target_kw == 1.0 and fallback.status == DispatchStatus.COMPLETED
    assert set(Command.objects.filter(dispatch=fallback).values_list("vehicle_id", flat=True)) <= {up1, up2}
    assert (row["planned_kw"], row["requested_kw"], row["acknowledged_kw"], row["status"]) == (
        4.5, 4.5, 4.5, "completed",
    )  # fmt: skip
    with contextlib.suppress(AssertionError):  # let the worker finish before the flush
        wait_for(
            lambda: not Dispatch.objects.exclude(status__in=("completed", "partial", "failed")).exists(),
            5,
            "",
        )
