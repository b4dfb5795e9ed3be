"""Day-ahead plans on the real database: the planner input from the registry,
states and learned profiles; versions and idempotence; the approval workflow;
execution of a slot as a NEBEF signal with the planned setpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin.models import LogEntry
from django.db import IntegrityError, transaction
from django.utils import timezone

from dispatch.models import Dispatch, DispatchStatus, FlexibilitySignal, SignalSource
from fleet.models import Fleet
from scheduler import domain, selectors, services
from scheduler.models import Plan, PlanEntry, PlanSource, PlanStatus
from telemetry.models import VehicleState
from tests.scheduler.plans import DAY, NOW, commuter_profile, scheduler_config, stored_plan, vehicle

pytestmark = pytest.mark.django_db


def paris(day: date, hour: int, minute: int = 0) -> datetime:
    """A Paris summer time (UTC+2) as aware UTC."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - timedelta(hours=2)


@pytest.fixture
def fleet():
    return Fleet.objects.create(id="paris", name="Paris")


@pytest.fixture
def pool(fleet):
    """Vehicles covering each rule of the planner input."""
    vehicle("commuter", fleet, soc=0.634, profile=commuter_profile())  # home 18:00-07:30
    vehicle("no-profile", fleet, soc=0.9, departure_at=paris(DAY, 7, 40))
    vehicle("thin-profile", fleet, soc=0.9, profile=commuter_profile(), covered_days=1)  # too little
    vehicle("nowhere", fleet, soc=0.9)  # no profile, no departure
    vehicle("not-v2g", fleet, is_v2g=False, profile=commuter_profile())
    vehicle("no-state", fleet, soc=None, profile=commuter_profile())
    vehicle("retired", fleet, active=False, profile=commuter_profile())
    vehicle("fussy", fleet, soc=0.9, min_soc=0.45, target_soc=0.95, profile=commuter_profile(40, 60))
    return fleet


def test_the_planner_input_comes_from_the_registry_states_and_learned_profiles(pool):
    inp, excluded = services.plan_input(DAY, now=NOW)
    assert len(inp.slot_starts) == 96 and inp.slot_minutes == 15
    assert inp.slot_starts[0] == paris(DAY, 0)
    by_id = {v.vehicle_id: v for v in inp.vehicles}
    assert sorted(by_id) == ["commuter", "fussy", "no-profile"]

    commuter = by_id["commuter"]
    assert commuter.windows == ((0, 30), (72, 96))  # home until 07:30 and from 18:00
    assert commuter.departure_targets == ((30, 0.8), (96, 0.8))  # its target SoC when each window ends
    assert commuter.soc_start == pytest.approx(0.63)  # latest SoC, to 1 %
    assert commuter.min_soc == 0.3  # dispatch's safe-discharge floor: plans are executable
    assert (commuter.battery_kwh, commuter.max_charge_kw, commuter.max_discharge_kw) == (60, 11, 10)
    # No usable profile: plugged in until the announced departure (07:40 -> slots ending by 07:30).
    assert by_id["no-profile"].windows == ((0, 30),)
    fussy = by_id["fussy"]
    assert fussy.min_soc == 0.45 and fussy.departure_targets == ((40, 0.95), (96, 0.95))

    assert excluded == {
        "thin-profile": "no learned plug-in profile and no departure time",
        "nowhere": "no learned plug-in profile and no departure time",
        "not-v2g": "not V2G capable",
        "no-state": "SoC unknown (no state reported yet)",
    }


def test_a_departure_ends_the_learned_window_it_falls_in(fleet):
    vehicle("early", fleet, profile=commuter_profile(), departure_at=paris(DAY, 6, 5))
    inp, _ = services.plan_input(DAY, now=NOW)
    assert inp.vehicles[0].windows == ((0, 24), (72, 96))


def test_slots_already_started_are_not_planned(fleet):
    vehicle("home", fleet, profile=commuter_profile())
    inp, _ = services.plan_input(DAY, now=paris(DAY, 19, 10))
    assert inp.vehicles[0].windows == ((77, 96),)


def test_a_plan_is_stored_as_a_draft_version_with_entries_inside_the_windows(pool):
    outcome = services.plan_day(DAY, now=NOW)
    plan = outcome.plan
    assert outcome.created and plan.version == 1 and plan.status == PlanStatus.DRAFT
    assert plan.source == PlanSource.COMMAND and plan.fleet_id is None
    assert (plan.slot_count, plan.slot_minutes, plan.time_zone) == (96, 15, "Europe/Paris")
    assert plan.solver_status == "optimal" and plan.gap == 0.0 and plan.solve_s > 0
    assert plan.target_kw == [round(100 / 24, 6)] * 96  # 100 kWh spread over 24 h
    assert plan.vehicle_count == 3 and set(plan.excluded) == {
        "thin-profile",
        "nowhere",
        "not-v2g",
        "no-state",
    }

    entries = list(
        PlanEntry.objects.filter(plan=plan).values_list("vehicle_id", "slot", "timeslot", "power_kw")
    )
    assert len(entries) == plan.entry_count > 0
    inp, _ = services.plan_input(DAY, now=NOW)
    windows = {v.vehicle_id: v.windows for v in inp.vehicles}
    for vid, slot, timeslot, kw in entries:
        assert any(start <= slot < end for start, end in windows[vid]), (vid, slot)
        assert timeslot == inp.slot_starts[slot]
        assert -11 - 1e-9 <= kw <= 10 + 1e-9 and kw != 0 and round(kw, 3) == kw
    for k in range(96):
        in_slot = sum(kw for _v, slot, _t, kw in entries if slot == k)
        assert plan.planned_kw[k] == pytest.approx(in_slot, abs=1e-6)
        assert plan.shortfall_kw[k] >= 0
    # Three vehicles cannot deliver 100 kWh: the shortfall says so, not hidden.
    assert plan.shortfall_kwh > 0
    assert plan.planned_kwh + plan.shortfall_kwh == pytest.approx(plan.target_kwh, abs=0.01)


def test_a_rerun_with_the_same_inputs_returns_the_existing_version(pool):
    first = services.plan_day(DAY, now=NOW)
    again = services.plan_day(DAY, now=NOW + timedelta(minutes=3))
    assert not again.created and again.plan.id == first.plan.id
    # SoC noise below 1 % does not make a new plan either.
    VehicleState.objects.filter(vehicle_id="commuter").update(soc=0.6338)
    assert not services.plan_day(DAY, now=NOW).created
    assert Plan.objects.count() == 1


def test_new_inputs_make_a_new_version_and_never_overwrite(pool):
    first = services.plan_day(DAY, now=NOW).plan
    entries_before = list(PlanEntry.objects.filter(plan=first).values_list("vehicle_id", "slot", "power_kw"))
    VehicleState.objects.filter(vehicle_id="commuter").update(soc=0.95)
    second = services.plan_day(DAY, now=NOW)
    assert second.created and second.plan.version == 2
    assert second.plan.inputs_digest != first.inputs_digest
    assert list(PlanEntry.objects.filter(plan=first).values_list("vehicle_id", "slot", "power_kw")) == (
        entries_before
    )
    # Another day numbers its versions on its own.
    assert services.plan_day(DAY + timedelta(days=1), now=NOW).plan.version == 1


def test_a_fleet_plan_uses_that_fleet_only(pool):
    other = Fleet.objects.create(id="lyon", name="Lyon")
    vehicle("lyon-ev", other, profile=commuter_profile())
    plan = services.plan_day(DAY, fleet_id="lyon", now=NOW).plan
    assert plan.fleet_id == "lyon" and plan.vehicle_count == 1
    assert set(PlanEntry.objects.filter(plan=plan).values_list("vehicle_id", flat=True)) <= {"lyon-ev"}
    with pytest.raises(services.PlanError, match="fleet: no fleet 'nope'"):
        services.plan_day(DAY, fleet_id="nope", now=NOW)


def test_the_target_comes_from_the_energy_or_from_a_profile_read_by_local_time(settings, pool):
    autumn, spring = date(2025, 10, 26), date(2025, 3, 30)
    cfg = settings.V2G.scheduler
    assert services.target_per_slot(
        cfg, autumn, services.domain.day_slots(autumn, "Europe/Paris", 15), 15
    ) == ((round(100 / 25, 6),) * 100)
    scheduler_config(settings, target_energy_kwh=46.0, slot_duration_minutes=60)
    inp, _ = services.plan_input(spring, now=NOW)
    assert inp.target_kw == (2.0,) * 23 and inp.slot_minutes == 60

    # One value per quarter-hour of an ordinary day serves the DST days by local time.
    ordinary = [float(k) for k in range(96)]
    scheduler_config(settings, target_profile_kw=ordinary, slot_duration_minutes=15)
    autumn_target = services.plan_input(autumn, now=NOW)[0].target_kw
    assert len(autumn_target) == 100
    assert autumn_target[8:16] == (8, 9, 10, 11, 8, 9, 10, 11)  # 02:00-02:45 twice
    spring_target = services.plan_input(spring, now=NOW)[0].target_kw
    assert len(spring_target) == 92 and spring_target[7:9] == (7, 12)  # 01:45, then 03:00
    # Or exactly one value per slot of that day.
    scheduler_config(settings, target_profile_kw=[5.0] * 92)
    assert services.plan_input(spring, now=NOW)[0].target_kw == (5.0,) * 92
    with pytest.raises(
        services.PlanError, match=r"scheduler\.target_profile_kw has 92 value\(s\), but 2025-06-03"
    ):
        services.plan_day(DAY, now=NOW)


# --- approval ----------------------------------------------------------------------------------


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user("operator", is_staff=True)


def test_approving_a_draft_records_who_and_when_and_supersedes_the_approved_one(operator):
    v1 = stored_plan(DAY, {(40, "ev-1"): 5.0})
    v2 = stored_plan(DAY, {(40, "ev-1"): 6.0})
    assert (v1.version, v2.version) == (1, 2)
    at = NOW + timedelta(hours=1)
    plan, previous = services.plan_approve(v1.id, user=operator, now=at)
    assert previous is None
    assert (plan.status, plan.decided_by, plan.decided_at) == (PlanStatus.APPROVED, operator, at)

    plan, previous = services.plan_approve(v2.id, user=operator, now=at)
    assert previous.id == v1.id
    statuses = dict(Plan.objects.values_list("version", "status"))
    assert statuses == {1: PlanStatus.SUPERSEDED, 2: PlanStatus.APPROVED}
    log = list(LogEntry.objects.order_by("id").values_list("object_id", "change_message"))
    assert log == [
        (str(v1.id), "Approved"),
        (str(v2.id), "Approved, superseding version 1"),
        (str(v1.id), "Superseded by version 2"),
    ]
    assert selectors.plan_for_day(Plan.objects.all(), DAY).id == v2.id
    assert selectors.plan_for_day(Plan.objects.all(), DAY, version=1).id == v1.id


def test_only_drafts_can_be_decided(operator):
    v1 = stored_plan(DAY, {(40, "ev-1"): 5.0})
    v2 = stored_plan(DAY, {(40, "ev-1"): 6.0})
    services.plan_approve(v1.id, user=operator, now=NOW)
    rejected = services.plan_reject(v2.id, user=operator, now=NOW)
    assert (rejected.status, rejected.decided_by) == (PlanStatus.REJECTED, operator)
    with pytest.raises(services.PlanStateError, match="is rejected: only a draft can be approved"):
        services.plan_approve(v2.id, user=operator, now=NOW)
    with pytest.raises(services.PlanStateError, match="is approved: only a draft can be rejected"):
        services.plan_reject(v1.id, user=operator, now=NOW)
    with pytest.raises(services.PlanStateError, match="is approved: only a draft can be approved"):
        services.plan_approve(v1.id, user=operator, now=NOW)
    v3 = stored_plan(DAY, {(40, "ev-1"): 7.0})
    with pytest.raises(services.PlanStateError, match="the delivery day is over"):
        services.plan_approve(v3.id, user=operator, now=paris(DAY + timedelta(days=1), 0))


def test_the_database_holds_one_approved_plan_per_day(operator):
    v1 = stored_plan(DAY, {(40, "ev-1"): 5.0})
    v2 = stored_plan(DAY, {(40, "ev-1"): 6.0})
    services.plan_approve(v1.id, user=operator, now=NOW)
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.filter(id=v2.id).update(status=PlanStatus.APPROVED)
    other_day = stored_plan(DAY + timedelta(days=1), {(40, "ev-1"): 5.0})
    services.plan_approve(other_day.id, user=operator, now=NOW)  # another day: its own approved plan


# --- execution ---------------------------------------------------------------------------------


def slot_now() -> tuple[date, int, datetime, int]:
    """Today's local day, the slot under way, its start, and another slot of the day."""
    now = timezone.now()
    today = now.astimezone(ZoneInfo("Europe/Paris")).date()
    starts = domain.day_slots(today, "Europe/Paris", 15)
    k = max(i for i, start in enumerate(starts) if start <= now)
    return today, k, starts[k], k + 1 if k + 1 < len(starts) else k - 1


def test_the_slot_under_way_becomes_one_nebef_signal_with_the_planned_setpoints(fleet, operator):
    today, k, start, other = slot_now()
    plan = stored_plan(today, {(k, "ev-1"): 5.0, (k, "ev-2"): -1.5})
    assert services.plan_execute()["outcome"] == "no_approved_plan"
    services.plan_approve(plan.id, user=operator)

    report = services.plan_execute()
    assert report["outcome"] == "submitted" and report["slot"] == k and report["vehicles"] == 2
    signal = FlexibilitySignal.objects.get()
    assert signal.source == SignalSource.PLAN and signal.external_id == f"plan:{plan.id}:{k}"
    assert (signal.signal_type, signal.power_kw, signal.duration_s) == ("NEBEF", 3.5, 900)
    assert (signal.start_at, signal.valid_until) == (start, start + timedelta(minutes=15))
    assert signal.setpoints_kw == {"ev-1": 5.0, "ev-2": -1.5}

    # A second run in the slot (a duplicate Beat, a redelivery) submits nothing.
    assert services.plan_execute()["outcome"] == "already_executed"
    assert FlexibilitySignal.objects.count() == 1
    # Nothing planned in a slot: no signal.
    other_start = domain.day_slots(today, "Europe/Paris", 15)[other]
    assert services.plan_execute(other_start + timedelta(seconds=1))["outcome"] == "nothing_planned"
    # A version approved during the slot takes over from the next slot, not this one again.
    newer = stored_plan(today, {(k, "ev-1"): 9.0})
    services.plan_approve(newer.id, user=operator)
    assert services.plan_execute()["outcome"] == "already_executed"
    assert FlexibilitySignal.objects.count() == 1


def test_delivery_against_plan_per_slot(fleet, operator):
    today, k, start, other = slot_now()
    plan = stored_plan(today, {(k, "ev-1"): 5.0, (k, "ev-2"): 3.0, (other, "ev-1"): 4.0})
    services.plan_approve(plan.id, user=operator)
    services.plan_execute()
    delivery = selectors.plan_delivery(plan)
    row = delivery["slots"][k]
    assert row["timeslot"] == start.astimezone(ZoneInfo("Europe/Paris")).isoformat()
    assert (row["planned_kw"], row["requested_kw"], row["status"]) == (8.0, 8.0, "in_progress")
    assert delivery["slots"][other]["status"] == "not_executed"
    assert delivery["slots"][other]["requested_kw"] is None

    # The dispatch rounds finish: 5 kW acknowledged first, 1 kW more by fallback.
    first = Dispatch.objects.get()
    Dispatch.objects.filter(id=first.id).update(
        status=DispatchStatus.PARTIAL, allocated_kw=8.0, acknowledged_kw=5.0, finished_at=NOW
    )
    Dispatch.objects.create(
        signal=first.signal, round=1, target_kw=3.0, allocated_kw=3.0, acknowledged_kw=1.0,
        status=DispatchStatus.PARTIAL, finished_at=NOW,
    )  # fmt: skip
    delivery = selectors.plan_delivery(plan)
    row = delivery["slots"][k]
    assert (row["allocated_kw"], row["acknowledged_kw"], row["status"]) == (11.0, 6.0, "partial")
    assert row["dispatch_id"] == str(first.id)
    assert delivery["executed_slots"] == 1
    assert (delivery["planned_kwh"], delivery["requested_kwh"], delivery["acknowledged_kwh"]) == (
        2.0,
        2.0,
        1.5,
    )
