"""The operator console in a real browser: Debian's Chromium driven by
Playwright (never a downloaded browser), against the whole stack as processes
(gunicorn, a Celery worker, the MQTT bridge, the fleet simulator) on the test
database, logged in as an operator of one fleet.

It logs in, filters the vehicle list, submits a signal for selected vehicles
from the admin and watches its dispatch come back acknowledged, approves the
day's plan and downloads its CSV, backfills the KPIs through a worker, then
opens the dashboard and checks that its charts were drawn from the API's
figures and refresh live. Every console error and uncaught page error fails
the test. Screenshots are saved to coverage/: console-dashboard.png (the
dashboard), console-vehicles.png (the filtered vehicle list) and
console-dispatch.png (the dispatch page with its acks).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections
from django.utils import timezone

from console.groups import OPERATORS
from console.selectors import local_today
from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus
from fleet.models import Fleet, Site, Vehicle
from kpis.models import VehicleDayKpi
from scheduler.models import PlanStatus
from telemetry.models import VehicleState
from tests.conftest import (
    ROOT,
    TEST_PROCESS_ENV,
    database_url,
    free_port,
    operator,
    stop_process,
    subprocess_env,
    wait_for,
)
from tests.scheduler.plans import stored_plan

pytestmark = [
    pytest.mark.services,
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = os.environ.get("V2G_CHROMIUM", "/usr/bin/chromium")
COUNT = 6
PASSWORD = "console-Passw0rd"
SCREENSHOT = ROOT / "coverage" / "console-dashboard.png"
CHARTS = ("chart-power", "chart-acks", "chart-vehicles", "chart-plan", "chart-co2")

# Non-transparent pixels of a canvas: drawn, not blank.
PAINTED = """id => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) { if (d[i] !== 0) { n += 1; } }
  return n;
}"""


def shot(page, name: str) -> None:
    """A full-page screenshot beside the coverage reports (coverage/)."""
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT.parent / name), full_page=True)


def _chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    message = f"no Chromium at {CHROMIUM}: apt-get install chromium (CI's .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def console(celery_worker, mqtt_bridge, tmp_path):
    """gunicorn and a simulated fleet; an operator of that fleet only, a second
    fleet it must not see, and a draft plan of today for its fleet."""
    chromium = _chromium()
    prefix = f"br{secrets.token_hex(2)}-"
    fleet = Fleet.objects.create(id=prefix.rstrip("-"), name=f"Browser fleet {prefix.rstrip('-')}")
    site = Site.objects.create(fleet=fleet, name="Depot")
    for n in range(COUNT):
        Vehicle.objects.create(
            id=f"{prefix}{n:04d}", fleet=fleet, site=site, cluster="north" if n % 2 else "south",
            battery_kwh=60, max_charge_kw=11, max_discharge_kw=11,
        )  # fmt: skip
    other = Fleet.objects.create(id=f"other{prefix.rstrip('-')}", name="Another operator's fleet")
    Vehicle.objects.create(
        id=f"{other.id}-0000", fleet=other, battery_kwh=60, max_charge_kw=11, max_discharge_kw=11
    )
    user = operator("console-op", fleets=[fleet.id], password=PASSWORD)
    user.groups.add(Group.objects.get(name=OPERATORS))
    plan = stored_plan(
        local_today(timezone.now()),
        {(k, f"{prefix}{n:04d}"): 2.5 for k in range(40, 44) for n in range(3)},
        fleet_id=fleet.id,
    )

    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        K_WEB__DEBUG="true",  # static files from the apps (WhiteNoise's finders): no collectstatic needed
        **TEST_PROCESS_ENV,
    )
    port = free_port()
    commands = {
        "web": [sys.executable, "-m", "gunicorn", "v2g_project.wsgi:application", f"--bind=127.0.0.1:{port}",
                "--workers=2", "--timeout=60", "--no-control-socket"],
        "simulator": [sys.executable, "-m", "simulator", "--count", str(COUNT), "--prefix", prefix,
                      "--url", settings.V2G.mqtt.url, "--seed", "11", "--profiles", "always=1",
                      "--v2g-share", "1", "--drop-rate", "0", "--reject-rate", "0",
                      "--ack-latency-ms-min", "5", "--ack-latency-ms-max", "40",
                      "--telemetry-interval-s", "2", "--status-interval-s", "0"],
    }  # fmt: skip
    procs = {}
    for name, command in commands.items():
        with open(tmp_path / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def web_up():
            try:
                return urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(web_up, 60, "gunicorn")
        wait_for(
            lambda: VehicleState.objects.filter(vehicle__fleet=fleet, plugged_in=True).count() == COUNT,
            30,
            "the simulated vehicles' telemetry",
        )
        yield {"base": base, "fleet": fleet, "other": other, "prefix": prefix, "plan": plan,
               "chromium": chromium, "logs": tmp_path}  # fmt: skip
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} died: {(tmp_path / f'{name}.log').read_text()[-2000:]}"
    finally:
        for proc in procs.values():
            stop_process(proc)


def test_an_operator_runs_its_fleet_from_the_console_in_a_browser(
    console, monkeypatch, tmp_path, record_testsuite_property
):
    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls
    # between browser steps are plain synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base, fleet, prefix = console["base"], console["fleet"], console["prefix"]
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=console["chromium"], args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.on(
            "console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
        page.on(
            "response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
        )
        page.set_default_timeout(20_000)
        try:
            # --- log in ---------------------------------------------------------------
            page.goto(f"{base}/admin/login/")
            page.fill("#id_username", "console-op")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            expect(page.locator("#console-dashboard-link")).to_be_visible()

            # --- the vehicle list, filtered: only the operator's fleet -------------------
            page.goto(f"{base}/admin/fleet/vehicle/")
            results = page.locator("#result_list tbody tr")
            expect(results).to_have_count(COUNT)
            expect(page.locator("#result_list")).not_to_contain_text(console["other"].id)
            expect(page.locator("#changelist-filter")).not_to_contain_text("Another operator's fleet")
            page.locator("#changelist-filter a", has_text="available (plugged in, online, fresh)").click()
            page.locator("#changelist-filter a", has_text="north").click()
            expect(results).to_have_count(COUNT // 2)
            assert "availability=available" in page.url and "cluster=north" in page.url
            expect(page.locator("#result_list td.field-soc_pct").first).to_contain_text("%")
            shot(page, "console-vehicles.png")

            # --- a signal for the selected vehicles, from the admin ---------------------------
            selected = sorted(
                page.locator("#result_list input.action-select").evaluate_all("l => l.map(e => e.value)")
            )
            selected = selected[:2]
            for vehicle_id in selected:
                page.check(f"#result_list input.action-select[value='{vehicle_id}']")
            page.select_option("select[name=action]", "submit_signal")
            page.click("#changelist-form button[name=index]")
            expect(page.locator("h1")).to_contain_text("Submit a signal for 2 selected vehicle(s)")
            page.select_option("#id_signal_type", "FCR")
            page.fill("#id_power_kw", "12")
            page.fill("#id_duration_s", "600")
            page.click("#signal-form input[type=submit]")
            page.wait_for_url("**/admin/dispatch/dispatch/*/change/")
            expect(page.locator("ul.messagelist")).to_contain_text("submitted for 2 selected vehicle(s)")
            dispatch_id = page.url.rstrip("/").split("/")[-2]

            # --- the dispatch appears with its acks ------------------------------------------
            def acked_on_page() -> bool:
                page.reload()
                return page.locator("#commands-group td.field-status", has_text="Acked").count() == len(
                    selected
                )

            wait_for(acked_on_page, 30, "the commands acknowledged on the dispatch page", interval_s=0.5)
            commands = Command.objects.filter(dispatch_id=dispatch_id)
            assert sorted(commands.values_list("vehicle_id", flat=True)) == selected  # the selection only
            assert all(c.status == CommandStatus.ACKED and c.latency_s is not None for c in commands)
            expect(page.locator("#commands-group")).to_contain_text(selected[0])
            shot(page, "console-dispatch.png")
            wait_for(
                lambda: Dispatch.objects.get(id=dispatch_id).status == DispatchStatus.COMPLETED,
                30,
                "the dispatch to complete",
            )

            # --- approve today's plan, download its CSV ----------------------------------------
            plan = console["plan"]
            page.goto(f"{base}/admin/scheduler/plan/")
            page.check(f"#result_list input.action-select[value='{plan.pk}']")
            page.select_option("select[name=action]", "approve")
            page.click("#changelist-form button[name=index]")
            expect(page.locator("ul.messagelist")).to_contain_text(f"version {plan.version} approved")
            plan.refresh_from_db()
            assert plan.status == PlanStatus.APPROVED and plan.decided_by.username == "console-op"
            page.check(f"#result_list input.action-select[value='{plan.pk}']")
            page.select_option("select[name=action]", "export_csv")
            with page.expect_download() as download_info:
                page.click("#changelist-form button[name=index]")
            download = download_info.value
            csv_path = tmp_path / download.suggested_filename
            download.save_as(csv_path)
            lines = csv_path.read_text().splitlines()
            assert lines[0] == "vehicle_id,timeslot,power_kw"
            assert len(lines) == 1 + 12 and lines[1].startswith(f"{prefix}0000,")

            # --- backfill today's KPIs through a worker ----------------------------------------
            page.goto(f"{base}/admin/kpis/vehicledaykpi/")
            page.click("text=Backfill KPIs")
            today = local_today(timezone.now()).isoformat()
            page.fill("#id_start", today)
            page.fill("#id_end", today)
            page.select_option("#id_fleet", fleet.id)
            page.click("#backfill-form input[type=submit]")
            expect(page.locator("ul.messagelist")).to_contain_text("enqueued")
            wait_for(
                lambda: VehicleDayKpi.objects.filter(vehicle__fleet=fleet, injected_kwh__gt=0).exists(),
                60,
                "the worker's KPI rows",
            )

            # --- the dashboard ------------------------------------------------------------------
            page.goto(f"{base}/admin/dashboard/")
            page.wait_for_function("window.v2gDashboard && window.v2gDashboard.updates >= 1")
            expect(page.locator("#tile-total")).to_have_text(str(COUNT))
            expect(page.locator("#tile-plugged")).to_have_text(str(COUNT))
            expect(page.locator("#tile-dispatched")).to_have_text(str(len(selected)))
            figures = page.evaluate(
                """() => { const c = window.v2gDashboard.charts; return {
                    requested: Math.max(...c["chart-power"].data.datasets[0].data),
                    acknowledged: Math.max(...c["chart-power"].data.datasets[1].data),
                    types: c["chart-acks"].data.labels, rates: c["chart-acks"].data.datasets[0].data,
                    slots: c["chart-plan"].data.labels.length,
                    planned: Math.max(...c["chart-plan"].data.datasets[0].data),
                    co2: c["chart-co2"].data.datasets[0].data.reduce((a, b) => a + b, 0) }; }"""
            )
            assert figures["requested"] > 0 and figures["acknowledged"] > 0
            assert figures["types"] == ["FCR"] and figures["rates"] == [100]
            assert figures["slots"] in (92, 96, 100) and figures["planned"] == pytest.approx(7.5)
            assert figures["co2"] > 0
            for chart in CHARTS:
                assert page.evaluate(PAINTED, chart) > 500, f"{chart} is blank"
            # Live: it polls the API again without a reload.
            page.wait_for_function("window.v2gDashboard.updates >= 2", timeout=30_000)
            shot(page, SCREENSHOT.name)
            shutil.copy(SCREENSHOT, tmp_path / SCREENSHOT.name)
            print(f"\ndashboard screenshot: {SCREENSHOT}")
            record_testsuite_property("screenshot", str(SCREENSHOT))  # in the JUnit XML of make e2e (xunit2)
            assert page.evaluate("window.v2gDashboard.errors") == 0
        except Exception:
            failure = tmp_path / "console-failure.png"
            page.screenshot(path=str(failure), full_page=True)
            print(f"\nscreenshot at the failure: {failure}\n{page.url}")
            for name in ("web", "simulator"):
                print(f"--- {name} log\n{(console['logs'] / f'{name}.log').read_text()[-3000:]}")
            raise
        finally:
            browser.close()
            # The ORM calls above ran in Playwright's greenlet, whose context has a
            # database connection of its own: close it, or the test database stays in use.
            connections.close_all()
    assert problems == [], "JavaScript errors in the console:\n" + "\n".join(problems)
