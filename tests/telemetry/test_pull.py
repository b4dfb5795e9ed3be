"""Pull rounds end to end: the real worker publishes the request, real
simulated vehicles (``python -m simulator``) answer over the real broker, the
real bridge records the answers, the worker closes the round."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest

from fleet.models import Fleet, Vehicle
from telemetry.models import PollStatus, TelemetryPoll, TelemetryPollMiss, VehicleStateHistory
from telemetry.tasks import telemetry_poll_task
from tests.conftest import ROOT, metric_value, stop_process, subprocess_env, wait_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def simulated_fleet(tmp_path):
    """start(count, silent_rate) -> vehicle ids: simulated vehicles, always
    plugged in, that push nothing (so only pull answers record state), and the
    same ids registered in the database."""
    procs = []

    def start(count: int, silent_rate: float = 0.0) -> list[str]:
        prefix = f"t{secrets.token_hex(3)}-ev-"
        log_path = tmp_path / f"sim-{prefix}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "simulator", "--count", str(count), "--prefix", prefix,
                    "--profiles", "always=1", "--telemetry-interval-s", "0", "--status-interval-s", "0",
                    "--silent-rate", str(silent_rate), "--seed", "7",
                ],
                cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)
        wait_for(lambda: "sim ready" in log_path.read_text() or proc.poll() is not None, 30, "the simulator")
        assert proc.poll() is None, log_path.read_text()
        fleet = Fleet.objects.create(id=f"{prefix}fleet", name="simulated")
        ids = [f"{prefix}{n:04d}" for n in range(count)]
        Vehicle.objects.bulk_create(
            Vehicle(id=vid, fleet=fleet, battery_kwh=60, max_charge_kw=11, max_discharge_kw=10) for vid in ids
        )
        return ids

    yield start
    for proc in procs:
        stop_process(proc)


def test_pull_round_records_answers_and_counts_silent_vehicles(
    celery_worker, mqtt_bridge, simulated_fleet, client
):
    ids = simulated_fleet(8, silent_rate=0.25)  # 2 vehicles never answer
    timeouts_before = metric_value(client, "telemetry_poll_timeout_total")

    # The session worker runs in push mode: a manual (forced) round, as telemetry_poll does.
    first = telemetry_poll_task.delay(force=True, timeout_s=2).get(timeout=30)
    assert first["outcome"] == "started"
    # A second round while the first collects is refused, not run alongside.
    assert telemetry_poll_task.delay(force=True, timeout_s=2).get(timeout=30)["outcome"] == "refused"

    poll = wait_for(
        lambda: TelemetryPoll.objects.filter(id=first["poll_id"], status=PollStatus.FINISHED).first(),
        30,
        "the round to finish",
    )
    assert (poll.expected, poll.answered, poll.timed_out) == (8, 6, 2)
    assert TelemetryPoll.objects.count() == 1
    answered = set(
        VehicleStateHistory.objects.filter(poll=poll, source="pull").values_list("vehicle_id", flat=True)
    )
    missed = set(TelemetryPollMiss.objects.filter(poll=poll).values_list("vehicle_id", flat=True))
    assert len(answered) == 6
    assert answered | missed == set(ids)
    assert not answered & missed
    assert Vehicle.objects.filter(id__in=answered, state__online=True, state__plugged_in=True).count() == 6
    wait_for(
        lambda: metric_value(client, "telemetry_poll_timeout_total") == timeouts_before + 2,
        10,
        "telemetry_poll_timeout_total to count the silent vehicles",
    )

    # Once finished, the next round runs.
    assert telemetry_poll_task.delay(force=True, timeout_s=1).get(timeout=30)["outcome"] == "started"


def test_discovery_refreshes_known_vehicles_through_the_real_bridge(
    celery_worker, mqtt_bridge, simulated_fleet
):
    """telemetry_discover broadcasts; every simulated vehicle answers with its
    capabilities and state; the bridge records the known ones (source discovery)."""
    ids = simulated_fleet(5)
    result = subprocess.run(
        [sys.executable, "manage.py", "telemetry_discover"],
        cwd=ROOT, env=subprocess_env(DATABASE_URL=_db_url()), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "discovery" in result.stdout and "sent on v2g/fleet/discovery" in result.stdout

    def recorded():
        return VehicleStateHistory.objects.filter(vehicle_id__in=ids, source="discovery").count() == len(ids)

    wait_for(recorded, 20, "the discovery answers to be recorded")


def _db_url() -> str:
    from django.conf import settings

    from tests.conftest import database_url

    return database_url(settings.DATABASES["default"])
