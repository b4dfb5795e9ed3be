"""Commands a dead worker never sent (issue 13): not published after their
round's ack deadline, failed at finalisation, and their vehicles stay
candidates for the fallback round (only vehicles that were sent a command
and did not ack are left out). The processes behind it:
tests/reliability/test_worker_faults.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dispatch import services
from dispatch.models import Command, CommandStatus, Dispatch
from fleet.models import Fleet, Vehicle
from telemetry.models import VehicleState

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(db):
    now = timezone.now()
    fleet = Fleet.objects.create(id="unsent", name="unsent")
    for n in range(4):
        vehicle = Vehicle.objects.create(
            id=f"unsent-{n}", fleet=fleet, battery_kwh=60, max_charge_kw=10, max_discharge_kw=10
        )
        VehicleState.objects.create(
            vehicle=vehicle, soc=0.8, plugged_in=True, reported_at=now, received_at=now
        )
    return fleet


def test_commands_unsent_at_the_deadline_fail_and_their_vehicles_take_the_fallback(fleet):
    signal, dispatch = services.signal_submit(
        signal_type="FCR", power_kw=20, duration_s=600, fleet_id=fleet.id
    )
    services.dispatch_allocate(dispatch.id)
    commands = Command.objects.filter(dispatch=dispatch)
    assert commands.count() == 4
    # One vehicle was sent its command and never answered; then the worker died.
    sent = commands.order_by("vehicle_id").first()
    commands.filter(id=sent.id).update(status=CommandStatus.PUBLISHED, published_at=timezone.now())
    Dispatch.objects.filter(id=dispatch.id).update(deadline_at=timezone.now() - timedelta(seconds=1))

    # A publish batch run after the deadline (a restarted worker) sends nothing.
    outcome = services.commands_publish(dispatch_id=str(dispatch.id), batch=0)
    assert outcome.published == 0
    assert commands.filter(status=CommandStatus.PENDING).count() == 3

    services.dispatch_finalize(dispatch.id)
    assert dict(commands.values_list("vehicle_id", "status")) == {
        "unsent-0": CommandStatus.TIMED_OUT,
        **{f"unsent-{n}": CommandStatus.FAILED for n in (1, 2, 3)},
    }
    fallback = Dispatch.objects.get(signal=signal, round=1)
    services.dispatch_allocate(fallback.id)
    fallback.refresh_from_db()
    assert set(fallback.commands.values_list("vehicle_id", flat=True)) == {"unsent-1", "unsent-2", "unsent-3"}
    assert fallback.excluded == {"unsent-0": "did not acknowledge in this signal"}
