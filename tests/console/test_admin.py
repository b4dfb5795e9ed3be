"""The operator console (Django admin): per-fleet scoping of every screen and
action, operators and auditors, actions with their intermediate pages, and the
admin log (issue 12). Browser tests: tests/e2e/test_console_browser.py."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.utils import timezone

from console.groups import AUDITORS, OPERATORS
from dispatch.log import dispatch_log_write
from dispatch.models import Command, CommandStatus, Dispatch, DispatchStatus, FlexibilitySignal
from fleet.models import ApiToken, Fleet, Site, Vehicle
from kpis.models import VehicleDayKpi
from telemetry.models import VehicleState
from tests.conftest import operator
from tests.scheduler.plans import stored_plan

pytestmark = pytest.mark.django_db


def world_fleet(fleet_id: str, count: int = 2) -> dict:
    now = timezone.now()
    fleet = Fleet.objects.create(id=fleet_id, name=f"Fleet {fleet_id}")
    site = Site.objects.create(fleet=fleet, name=f"depot-{fleet_id}")
    vehicles = []
    for n in range(count):
        vehicle = Vehicle.objects.create(
            id=f"{fleet_id}-ev{n}", fleet=fleet, site=site, cluster="north", battery_kwh=60,
            max_charge_kw=11, max_discharge_kw=11,
        )  # fmt: skip
        VehicleState.objects.create(
            vehicle=vehicle, soc=0.5 + n / 10, plugged_in=True, reported_at=now, received_at=now
        )
        vehicles.append(vehicle)
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=10, start_at=now, duration_s=600, valid_until=now + timedelta(minutes=10),
        fleet=fleet,
    )  # fmt: skip
    dispatch = Dispatch.objects.create(
        signal=signal, round=0, target_kw=10, allocated_kw=10, acknowledged_kw=5.5,
        status=DispatchStatus.PARTIAL, finished_at=now,
    )  # fmt: skip
    command = Command.objects.create(
        dispatch=dispatch, vehicle=vehicles[0], power_kw=5.5, allocated_kw=5.5, status=CommandStatus.ACKED,
        valid_until=signal.valid_until, published_at=now, acked_at=now, latency_s=0.042,
    )  # fmt: skip
    dispatch_log_write(
        [
            dict(
                at=now, dispatch_id=dispatch.id, signal_id=signal.id, signal_type="FCR", target_kw=10.0,
                vehicle_id=vehicles[0].id, command_id=command.id, allocated_kw=5.5, setpoint_kw=5.5,
                status="acked", acknowledged=True, ack_latency_s=0.042, fallback_round=0, score=None,
            )
        ]
    )  # fmt: skip
    VehicleDayKpi.objects.create(
        vehicle=vehicles[0], day=dt.date(2025, 6, 3), injected_kwh=2.0, consumed_kwh=1.0, co2_avoided_g=100.0,
        energy_ratio=2.0, measured_share=0.0, computed_at=now,
    )  # fmt: skip
    plan = stored_plan(
        timezone.now().date() + timedelta(days=10), {(12, vehicles[0].id): 3.0}, fleet_id=fleet_id
    )
    token = ApiToken(name=f"token-{fleet_id}")
    token.new_key()
    token.save()
    token.fleets.set([fleet])
    return {"fleet": fleet, "site": site, "vehicles": vehicles, "signal": signal, "dispatch": dispatch, "plan": plan,
            "token": token}  # fmt: skip


@pytest.fixture
def world():
    return {"a": world_fleet("fa"), "b": world_fleet("fb")}


def login(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def operator_a(client, world):
    user = operator("op-a", fleets=["fa"])
    user.groups.add(Group.objects.get(name=OPERATORS))
    return login(client, user)


@pytest.fixture
def auditor_a(client, world):
    user = operator("audit-a", fleets=["fa"])
    user.groups.add(Group.objects.get(name=AUDITORS))
    return login(client, user)


def test_the_groups_auditors_only_view_operators_run_the_fleet():
    auditors = set(Group.objects.get(name=AUDITORS).permissions.values_list("codename", flat=True))
    operators = set(Group.objects.get(name=OPERATORS).permissions.values_list("codename", flat=True))
    assert auditors and all(codename.startswith("view_") for codename in auditors)
    assert {
        "view_vehicle",
        "view_dispatchlogentry",
        "view_plan",
        "view_periodictask",
        "view_logentry",
    } <= auditors
    assert {"add_flexibilitysignal", "change_plan", "change_vehicle", "change_vehicledaykpi"} <= operators
    assert not any(codename.startswith("delete_") for codename in operators)


# Changelist -> what of fleet A and of fleet B would be on it.
SCREENS = {
    "/admin/fleet/fleet/": ("Fleet fa", "Fleet fb"),
    "/admin/fleet/site/": ("depot-fa", "depot-fb"),
    "/admin/fleet/vehicle/": ("fa-ev0", "fb-ev0"),
    "/admin/fleet/apitoken/": ("token-fa", "token-fb"),
    "/admin/telemetry/vehiclestate/": ("fa-ev1", "fb-ev1"),
    "/admin/dispatch/flexibilitysignal/": ("Fleet fa", "Fleet fb"),
    "/admin/dispatch/dispatchlogentry/": ("fa-ev0", "fb-ev0"),
    "/admin/kpis/vehicledaykpi/": ("fa-ev0", "fb-ev0"),
}


@pytest.mark.parametrize("url", SCREENS)
def test_an_operator_sees_only_its_fleets_on_every_screen(operator_a, url):
    page = operator_a.get(url)
    assert page.status_code == 200
    mine, theirs = SCREENS[url]
    text = page.content.decode()
    assert mine in text
    assert theirs not in text


def test_objects_of_another_fleet_do_not_exist_for_an_operator(operator_a, world):
    b = world["b"]
    for url in (
        f"/admin/fleet/vehicle/{b['vehicles'][0].pk}/change/",
        f"/admin/fleet/fleet/{b['fleet'].pk}/change/",
        f"/admin/dispatch/dispatch/{b['dispatch'].pk}/change/",
        f"/admin/dispatch/flexibilitysignal/{b['signal'].pk}/change/",
        f"/admin/scheduler/plan/{b['plan'].pk}/change/",
    ):
        response = operator_a.get(url)
        assert response.status_code == 302 and response["Location"] == "/admin/", url  # "does not exist"
    assert operator_a.get(f"/admin/scheduler/plan/{b['plan'].pk}/export.csv").status_code == 404
    a = world["a"]
    assert operator_a.get(f"/admin/dispatch/dispatch/{a['dispatch'].pk}/change/").status_code == 200
    csv = operator_a.get(f"/admin/scheduler/plan/{a['plan'].pk}/export.csv")
    assert csv.status_code == 200 and b"".join(csv.streaming_content).startswith(
        b"vehicle_id,timeslot,power_kw\n"
    )
    # Lists: a dispatch of B is not listed, nor B's plan.
    assert str(b["dispatch"].pk) not in operator_a.get("/admin/dispatch/dispatch/").content.decode()
    assert str(b["plan"].pk) not in operator_a.get("/admin/scheduler/plan/").content.decode()


def test_autocomplete_and_choices_offer_only_the_operators_fleets(operator_a, world):
    found = operator_a.get(
        "/admin/autocomplete/",
        {"app_label": "fleet", "model_name": "vehicle", "field_name": "site", "term": "depot"},
    ).json()
    assert [r["text"] for r in found["results"]] == ["fa/depot-fa"]
    found = operator_a.get(
        "/admin/autocomplete/",
        {"app_label": "fleet", "model_name": "vehicle", "field_name": "fleet", "term": ""},
    ).json()
    assert [r["id"] for r in found["results"]] == ["fa"]
    # Saving a vehicle into another fleet is refused by the form.
    vehicle = world["a"]["vehicles"][0]
    page = operator_a.post(
        f"/admin/fleet/vehicle/{vehicle.pk}/change/",
        {"fleet": "fb", "site": "", "cluster": "", "segment": "", "active": "on", "priority": 0, "is_v2g": "on",
         "battery_kwh": 60, "max_charge_kw": 11, "max_discharge_kw": 11, "min_soc": 0.2, "target_soc": 0.8},
    )  # fmt: skip
    assert page.status_code == 200 and "Select a valid choice" in page.content.decode()
    assert Vehicle.objects.get(pk=vehicle.pk).fleet_id == "fa"
    # Nor may a limited operator add a fleet, or issue a token for every fleet.
    assert operator_a.get("/admin/fleet/fleet/add/").status_code == 403
    page = operator_a.post("/admin/fleet/apitoken/add/", {"name": "x", "all_fleets": "on"})
    assert "You may issue tokens for your own fleets only." in page.content.decode()


def test_the_vehicle_list_shows_soc_and_last_seen_in_a_constant_number_of_queries(
    client, django_assert_max_num_queries, django_user_model
):
    world_fleet("fq", count=3)
    client.force_login(django_user_model.objects.create_superuser("boss", password="pw-boss-1"))
    with django_assert_max_num_queries(12) as few:
        page = client.get("/admin/fleet/vehicle/")
    for n in range(3, 40):
        vehicle = Vehicle.objects.create(
            id=f"fq-more{n}", fleet_id="fq", battery_kwh=60, max_charge_kw=11, max_discharge_kw=11
        )
        VehicleState.objects.create(
            vehicle=vehicle, soc=0.42, plugged_in=True, reported_at=timezone.now(), received_at=timezone.now()
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get("/admin/fleet/vehicle/")
    text = page.content.decode()
    assert "42 %" in text and "50 %" in text
    assert "available (plugged in, online, fresh)" in text  # the availability filter
    filtered = client.get("/admin/fleet/vehicle/", {"availability": "available", "fleet__id__exact": "fq"})
    assert "fq-more39" in filtered.content.decode()
    assert (
        "fq-more39" not in client.get("/admin/fleet/vehicle/", {"availability": "offline"}).content.decode()
    )


def test_submitting_a_signal_for_selected_vehicles_goes_through_an_intermediate_page(operator_a, world):
    selected = [v.pk for v in world["a"]["vehicles"]]
    form = operator_a.post("/admin/fleet/vehicle/", {"action": "submit_signal", "_selected_action": selected})
    assert form.status_code == 200 and "Submit a signal for 2 selected vehicle(s)" in form.content.decode()

    bad = operator_a.post(
        "/admin/fleet/vehicle/",
        {"action": "submit_signal", "_selected_action": selected, "apply": "1", "signal_type": "FCR",
         "power_kw": "x", "duration_s": "300"},
    )  # fmt: skip
    assert bad.status_code == 200 and "Enter a number." in bad.content.decode()

    done = operator_a.post(
        "/admin/fleet/vehicle/",
        {"action": "submit_signal", "_selected_action": selected, "apply": "1", "signal_type": "aFRR",
         "power_kw": "7.5", "duration_s": "120"},
    )  # fmt: skip
    signal = FlexibilitySignal.objects.get(signal_type="aFRR")
    dispatch = signal.dispatches.get(round=0)
    assert done.status_code == 302 and done["Location"] == f"/admin/dispatch/dispatch/{dispatch.pk}/change/"
    assert (signal.source, signal.fleet_id, signal.vehicle_ids) == ("admin", "fa", ["fa-ev0", "fa-ev1"])
    entry = LogEntry.objects.get(object_id=str(signal.pk))
    assert entry.user.username == "op-a" and entry.is_addition()
    assert entry.change_message == "Submitted from the admin for 2 selected vehicle(s)"


def test_a_signal_for_a_fleet(operator_a, world):
    page = operator_a.post(
        "/admin/fleet/fleet/",
        {"action": "submit_signal", "_selected_action": ["fa"], "apply": "1", "signal_type": "mFRR",
         "power_kw": "-4", "duration_s": "600"},
    )  # fmt: skip
    signal = FlexibilitySignal.objects.get(signal_type="mFRR")
    assert page.status_code == 302
    assert (signal.fleet_id, signal.vehicle_ids, signal.power_kw) == ("fa", None, -4.0)
    # Another fleet's id in the POST is not among the selectable objects: nothing happens.
    operator_a.post(
        "/admin/fleet/fleet/",
        {"action": "submit_signal", "_selected_action": ["fb"], "apply": "1", "signal_type": "MA",
         "power_kw": "4", "duration_s": "600"},
    )  # fmt: skip
    assert not FlexibilitySignal.objects.filter(signal_type="MA").exists()


def test_vehicles_of_two_fleets_are_one_signal_only_for_all_fleet_operators(client, world):
    two = operator("op-ab", fleets=["fa", "fb"])
    two.groups.add(Group.objects.get(name=OPERATORS))
    login(client, two)
    both = [world["a"]["vehicles"][0].pk, world["b"]["vehicles"][0].pk]
    page = client.post(
        "/admin/fleet/vehicle/", {"action": "submit_signal", "_selected_action": both}, follow=True
    )
    assert "Select vehicles of one fleet at a time." in page.content.decode()


def test_rerun_fallback_action_opens_a_round_and_is_logged(operator_a, world):
    dispatch = world["a"]["dispatch"]
    page = operator_a.post(
        "/admin/dispatch/dispatch/",
        {"action": "rerun_fallback", "_selected_action": [dispatch.pk]},
        follow=True,
    )
    assert "fallback round 1 opened for +4.500 kW" in page.content.decode()
    fallback = Dispatch.objects.get(signal=dispatch.signal, round=1)
    assert LogEntry.objects.filter(object_id=str(fallback.pk), user__username="op-a").exists()
    again = operator_a.post(
        "/admin/dispatch/dispatch/",
        {"action": "rerun_fallback", "_selected_action": [dispatch.pk]},
        follow=True,
    )
    assert "a round is still under way" in again.content.decode()


def test_the_dispatch_page_lists_commands_with_status_latency_and_round(operator_a, world):
    page = operator_a.get(f"/admin/dispatch/dispatch/{world['a']['dispatch'].pk}/change/").content.decode()
    assert "fa-ev0" in page and "Acked" in page and ">42<" in page  # latency in ms
    assert "fallback round" in page.lower()
    assert '<td class="field-acks">1/1</td>' in operator_a.get("/admin/dispatch/dispatch/").content.decode()


def test_kpi_backfill_validates_the_range_and_enqueues_the_task(operator_a, monkeypatch):
    from kpis import tasks

    calls = []
    monkeypatch.setattr(
        tasks.kpis_backfill_task, "delay", lambda *a: calls.append(a) or type("R", (), {"id": "t1"})
    )
    url = "/admin/kpis/vehicledaykpi/backfill/"
    assert "Backfill KPIs" in operator_a.get("/admin/kpis/vehicledaykpi/").content.decode()
    page = operator_a.post(url, {"start": "2025-06-05", "end": "2025-06-01", "fleet": "fa"})
    assert "is after the end" in page.content.decode()
    page = operator_a.post(url, {"start": "2025-06-01", "end": "2025-06-05", "fleet": "fb"})
    assert "Select a valid choice" in page.content.decode()  # not one of the operator's fleets
    page = operator_a.post(url, {"start": "2024-01-01", "end": "2025-06-05", "fleet": "fa"})
    assert "At most 366 days" in page.content.decode()
    assert calls == []
    page = operator_a.post(url, {"start": "2025-06-01", "end": "2025-06-05", "fleet": "fa"})
    assert page.status_code == 302
    assert calls == [("2025-06-01", "2025-06-05", "fa")]
    entry = LogEntry.objects.get(change_message__startswith="Backfill enqueued")
    assert entry.user.username == "op-a" and entry.object_repr == "KPIs 2025-06-01..2025-06-05 of fleet fa"


def test_plan_approval_and_export_are_in_the_admin_log(operator_a, world):
    plan = world["a"]["plan"]
    operator_a.post("/admin/scheduler/plan/", {"action": "approve", "_selected_action": [plan.pk]})
    exported = operator_a.post(
        "/admin/scheduler/plan/", {"action": "export_csv", "_selected_action": [plan.pk]}
    )
    assert exported["Content-Type"] == "text/csv"
    messages = list(LogEntry.objects.filter(object_id=str(plan.pk)).values_list("change_message", flat=True))
    assert "Approved" in messages and "Exported as CSV" in messages


def test_bulk_activate_and_deactivate_are_logged_per_vehicle(operator_a, world):
    ids = [v.pk for v in world["a"]["vehicles"]]
    operator_a.post("/admin/fleet/vehicle/", {"action": "deactivate", "_selected_action": ids})
    assert not Vehicle.objects.filter(pk__in=ids, active=True).exists()
    entries = LogEntry.objects.filter(change_message="Deactivated (bulk action)", user__username="op-a")
    assert sorted(entries.values_list("object_id", flat=True)) == sorted(ids)
    log = operator_a.get("/admin/admin/logentry/").content.decode()
    assert "Deactivated (bulk action)" in log


def test_an_auditor_sees_its_fleets_and_can_change_nothing(auditor_a, world):
    page = auditor_a.get("/admin/fleet/vehicle/").content.decode()
    assert "fa-ev0" in page and "fb-ev0" not in page
    assert "submit_signal" not in page and "deactivate" not in page
    vehicle = world["a"]["vehicles"][0]
    assert auditor_a.post(f"/admin/fleet/vehicle/{vehicle.pk}/change/", {"cluster": "x"}).status_code == 403
    auditor_a.post("/admin/fleet/vehicle/", {"action": "deactivate", "_selected_action": [vehicle.pk]})
    assert Vehicle.objects.get(pk=vehicle.pk).active
    plans = auditor_a.get("/admin/scheduler/plan/").content.decode()
    assert 'value="export_csv"' in plans and 'value="approve"' not in plans
    assert auditor_a.get("/admin/kpis/vehicledaykpi/backfill/").status_code == 403
    assert auditor_a.get("/admin/dashboard/").status_code == 200
    assert auditor_a.get("/admin/django_celery_beat/periodictask/").status_code == 200


def test_a_staff_user_without_fleet_access_sees_no_fleet(client, world, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATORS))
    login(client, user)
    page = client.get("/admin/fleet/vehicle/").content.decode()
    assert "fa-ev0" not in page and "fb-ev0" not in page
    assert client.get("/api/vehicles/").json()["results"] == []


def test_fleet_access_is_edited_on_the_user_page_by_all_fleet_users_only(admin_client, operator_a):
    page = admin_client.get("/admin/auth/user/").content.decode()
    assert "op-a" in page
    user_id = operator_a.session["_auth_user_id"]
    page = admin_client.get(f"/admin/auth/user/{user_id}/change/").content.decode()
    assert "fleet access" in page.lower() and 'name="fleet_access-0-fleets"' in page


def test_screens_of_every_fleet_are_for_all_fleet_operators_only(operator_a, admin_client):
    for url in ("/admin/telemetry/telemetrypoll/", "/admin/dispatch/rteconnectorstate/"):
        assert operator_a.get(url).status_code == 403
        assert admin_client.get(url).status_code == 200
    assert "Telemetry polls" not in operator_a.get("/admin/").content.decode()
    # Periodic tasks: a limited operator may look, not change or run them.
    page = operator_a.get("/admin/django_celery_beat/periodictask/")
    assert page.status_code == 200 and 'name="action"' not in page.content.decode()
