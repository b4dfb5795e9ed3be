"""Metrics across real processes, read from the web /metrics of this process:
Celery task metrics from a real prefork worker (its main process and its
children), the MQTT bridge process, the signal generator process; and the
whole exposition after real traffic, checked by promtool."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ROOT,
    TEST_PROCESS_ENV,
    database_url,
    metric_value,
    stop_process,
    subprocess_env,
    wait_for,
    worker_ready,
)
from tests.dispatch.test_pipeline import (  # noqa: F401 - fixtures used by name
    _settle_before_teardown,
    make_fleet,
    prefix,
    settled,
    submit,
    vehicles,
)
from v2g_project import multiproc

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# promtool lints this SPEC §12 name (a gauge ending in _sum); the name is the contract, so it stays.
SPEC_LINT_EXCEPTIONS = {
    'rte_generator_power_requested_kw_sum non-histogram and non-summary metrics should not have "_sum" suffix'
}


@pytest.fixture(scope="module")
def task_worker(django_db_setup, tmp_path_factory) -> Iterator[dict]:
    """A real prefork worker (2 children) on a queue of its own, with the test tasks."""
    queue = f"metrics-{secrets.token_hex(4)}"
    log_path = tmp_path_factory.mktemp("metrics-worker") / "worker.log"
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        **TEST_PROCESS_ENV,
    )
    command = [
        sys.executable, "-m", "celery", "-A", "v2g_project", "worker", "--pool", "prefork",
        "--concurrency", "2", "--queues", queue, "--include", "tests.metrics_tasks",
        "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        worker_ready(queue, log_path)
        yield {"queue": queue, "process": proc, "log": log_path}
    finally:
        stop_process(proc)


def send(name: str, queue: str, *args):
    from v2g_project.celery import app

    return app.send_task(name, args=list(args), queue=queue)


def snapshot(client, names: list[str], tasks: list[str]) -> dict[tuple[str, str], float]:
    return {(name, task): metric_value(client, name, task=task) for name in names for task in tasks}


def test_task_counters_and_runtime_from_a_real_worker(client, task_worker):
    queue = task_worker["queue"]
    tasks = ["tests.metrics.ok", "tests.metrics.fail", "tests.metrics.flaky"]
    names = [
        "celery_tasks_sent_total",
        "celery_tasks_received_total",
        "celery_tasks_succeeded_total",
        "celery_tasks_failed_total",
        "celery_tasks_retried_total",
        "celery_task_runtime_seconds_count",
    ]
    before = snapshot(client, names, tasks)

    oks = [send("tests.metrics.ok", queue, i) for i in range(2)]
    failing = send("tests.metrics.fail", queue)
    flaky = send("tests.metrics.flaky", queue)
    assert [r.get(timeout=30) for r in oks] == [0, 1]
    with pytest.raises(ValueError, match="on purpose"):
        failing.get(timeout=30)
    assert flaky.get(timeout=30) == "succeeded after 1 retry"

    expected = {
        # sent: 2 + 1 + 1 by this process, + the retry of flaky, sent by the worker child
        ("celery_tasks_sent_total", "tests.metrics.ok"): 2,
        ("celery_tasks_sent_total", "tests.metrics.fail"): 1,
        ("celery_tasks_sent_total", "tests.metrics.flaky"): 2,
        # received by the worker's main process; the retry is a new message
        ("celery_tasks_received_total", "tests.metrics.ok"): 2,
        ("celery_tasks_received_total", "tests.metrics.fail"): 1,
        ("celery_tasks_received_total", "tests.metrics.flaky"): 2,
        # outcomes, in the children
        ("celery_tasks_succeeded_total", "tests.metrics.ok"): 2,
        ("celery_tasks_succeeded_total", "tests.metrics.fail"): 0,
        ("celery_tasks_succeeded_total", "tests.metrics.flaky"): 1,
        ("celery_tasks_failed_total", "tests.metrics.ok"): 0,
        ("celery_tasks_failed_total", "tests.metrics.fail"): 1,
        ("celery_tasks_failed_total", "tests.metrics.flaky"): 0,
        ("celery_tasks_retried_total", "tests.metrics.ok"): 0,
        ("celery_tasks_retried_total", "tests.metrics.fail"): 0,
        ("celery_tasks_retried_total", "tests.metrics.flaky"): 1,
        # one runtime observation per run, whatever its outcome
        ("celery_task_runtime_seconds_count", "tests.metrics.ok"): 2,
        ("celery_task_runtime_seconds_count", "tests.metrics.fail"): 1,
        ("celery_task_runtime_seconds_count", "tests.metrics.flaky"): 2,
    }

    def deltas():
        now = snapshot(client, names, tasks)
        return {key: now[key] - before[key] for key in expected}

    # The results are stored before the outcome signals: wait for the counters.
    wait_for(lambda: deltas() == expected, 15, f"the task counters (now {deltas()})")
    assert metric_value(client, "celery_task_runtime_seconds_sum", task="tests.metrics.ok") > 0


def test_metrics_of_the_bridge_and_of_worker_children_reach_the_web_scrape(
    client, task_worker, mqtt_bridge, mqtt_client
):
    path = Path(settings.PROMETHEUS_MULTIPROC_DIR)
    # A worker child: health_ping tells which child ran it.
    pinged_before = metric_value(client, "celery_tasks_succeeded_total", task="v2g.health_ping")
    from v2g_project.tasks import health_ping

    child_pid = health_ping.apply_async(args=["metrics"], queue=task_worker["queue"]).get(timeout=30)["pid"]
    assert child_pid != task_worker["process"].pid
    wait_for(
        lambda: (
            metric_value(client, "celery_tasks_succeeded_total", task="v2g.health_ping") >= pinged_before + 1
        ),
        15,
        "the child's counter on /metrics",
    )
    # ...written to the child's own file, named by host and pid (multiproc.py).
    assert (path / f"counter_{multiproc.process_identifier(child_pid)}.db").exists()
    # The worker's main process counts what it receives, in its own file.
    assert (path / f"counter_{multiproc.process_identifier(task_worker['process'].pid)}.db").exists()

    # The bridge: a malformed ack is counted there.
    malformed_before = metric_value(client, "mqtt_bridge_messages_total", outcome="malformed")
    mqtt_client.publish(f"vehicle/{secrets.token_hex(3)}/ack", b"{not json", qos=1).wait_for_publish(5)
    wait_for(
        lambda: (
            metric_value(client, "mqtt_bridge_messages_total", outcome="malformed") >= malformed_before + 1
        ),
        15,
        "the bridge's counter on /metrics",
    )
    bridge_id = multiproc.process_identifier(mqtt_bridge["process"].pid)
    assert (path / f"counter_{bridge_id}.db").exists()
    assert bridge_id in multiproc.live_processes(path)


def families_with_samples(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text) if family.samples}


def test_promtool_accepts_the_live_metrics_after_real_traffic(
    client,
    celery_worker,
    task_worker,
    mqtt_bridge,
    make_fleet,  # noqa: F811 - the fixture imported above
    vehicles,  # noqa: F811
    tmp_path,
):
    """A real dispatch (worker, bridge, vehicles answering), the real signal
    generator process, Celery tasks, KPIs: then the whole /metrics text goes
    through ``promtool check metrics``."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    from kpis import services as kpi_services
    from tests.kpis.fixtures import command

    ids = make_fleet(2)
    vehicles()
    signal, _dispatch = submit(make_fleet.fleet, 10.0)
    settled(signal.id)
    # The generator, as its own process (2 signals: an interval is observed).
    generator = subprocess.run(
        [sys.executable, "manage.py", "rte_generate", "--count", "2", "--speed", "1000", "--seed", "7",
         "--fleet", make_fleet.fleet.id],
        cwd=ROOT,
        env=subprocess_env(DATABASE_URL=database_url(settings.DATABASES["default"])),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert generator.returncode == 0, generator.stdout + generator.stderr
    send("tests.metrics.fail", task_worker["queue"]).get(timeout=30, propagate=False)
    send("tests.metrics.flaky", task_worker["queue"]).get(timeout=30)
    # KPIs of today: the dispatch's injection, and some charging for a ratio.
    command(ids[0], -4.0, timezone.now().isoformat(), 900)
    today = kpi_services.local_today()
    kpi_services.kpis_compute_range(today - dt.timedelta(days=1), today)

    spec_families = {
        "dispatch_execution_latency_seconds", "vehicles_dispatched", "ack_rate", "mqtt_publish_success",
        "vehicle_injected_energy_kwh", "vehicle_co2_avoided_grams", "vehicle_energy_ratio",
        "telemetry_poll_timeout", "rte_generator_signals", "rte_generator_power_requested_kw_sum",
        "rte_generator_last_emit_timestamp_seconds", "rte_generator_emit_errors",
        "rte_generator_interval_seconds", "mqtt_publish_failure",
        "celery_tasks_sent", "celery_tasks_received", "celery_tasks_succeeded", "celery_tasks_failed",
        "celery_tasks_retried", "celery_task_runtime_seconds", "celery_queue_depth", "celery_broker_up",
        "mqtt_bridge_messages", "dispatch_acks",
    }  # fmt: skip
    text = wait_for(
        lambda: (
            (t := client.get("/metrics").content.decode()) and spec_families <= families_with_samples(t) and t
        ),
        30,
        "every family to have samples",
    )
    (tmp_path / "metrics.txt").write_text(text)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    # Exit 0: clean; 3: lint findings only (1 would be a parse error).
    assert result.returncode in (0, 3), result.stdout + result.stderr
    findings = {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()}
    assert findings <= SPEC_LINT_EXCEPTIONS, f"promtool: {findings - SPEC_LINT_EXCEPTIONS}"


def test_metrics_of_beat_reach_the_web_scrape(client, task_worker, tmp_path):
    """Beat sends a scheduled task: counted in Beat's own file, visible on /metrics."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name=f"metrics-beat-{secrets.token_hex(3)}",
        task="tests.metrics.ok",
        interval=every_second,
        args="[7]",
        queue=task_worker["queue"],
    )
    sent_before = metric_value(client, "celery_tasks_sent_total", task="tests.metrics.ok")
    received_before = metric_value(client, "celery_tasks_received_total", task="tests.metrics.ok")
    log_path = tmp_path / "beat.log"
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]), CELERY_BROKER_URL=settings.CELERY_BROKER_URL
    )
    with open(log_path, "ab") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "v2g_project", "beat", "--loglevel", "INFO",
             "--max-interval", "1"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: metric_value(client, "celery_tasks_sent_total", task="tests.metrics.ok") > sent_before,
            30,
            f"Beat to send the task:\n{log_path.read_text()[-2000:] if log_path.exists() else ''}",
        )
        beat_file = (
            Path(settings.PROMETHEUS_MULTIPROC_DIR) / f"counter_{multiproc.process_identifier(beat.pid)}.db"
        )
        assert beat_file.exists()
        # ...and the worker received what Beat sent.
        wait_for(
            lambda: (
                metric_value(client, "celery_tasks_received_total", task="tests.metrics.ok") > received_before
            ),
            15,
            "the worker to receive it",
        )
    finally:
        stop_process(beat)
