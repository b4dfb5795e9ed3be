"""API access: bearer tokens (admin, command), static token, staff sessions,
per-fleet isolation on every endpoint, throttling and CORS."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dispatch.log import dispatch_log_write
from dispatch.models import Dispatch, FlexibilitySignal
from fleet import services
from fleet.models import ApiToken, Fleet, Site, Vehicle
from tests.conftest import ROOT, operator, replace, subprocess_env

pytestmark = pytest.mark.django_db


class Bearer:
    """The test client with ``Authorization: Bearer <token>`` on every request."""

    def __init__(self, client, token: str) -> None:
        self.client, self.token = client, token

    def _headers(self, headers: dict | None) -> dict:
        return {"Authorization": f"Bearer {self.token}", **(headers or {})}

    def get(self, path: str, headers: dict | None = None):
        return self.client.get(path, headers=self._headers(headers))

    def post(self, path: str, body: dict):
        return self.client.post(path, body, content_type="application/json", headers=self._headers(None))

    def patch(self, path: str, body: dict):
        return self.client.patch(path, body, content_type="application/json", headers=self._headers(None))

    def delete(self, path: str):
        return self.client.delete(path, headers=self._headers(None))


def issue(*fleets: str, all_fleets: bool = False, **kwargs) -> str:
    return services.api_token_create(name="test", fleet_ids=fleets, all_fleets=all_fleets, **kwargs)[1]


def log_record(vehicle_id: str, minutes: int) -> dict:
    at = datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(minutes=minutes)
    return {
        "at": at, "command_id": uuid.uuid4(), "dispatch_id": uuid.uuid4(), "signal_id": uuid.uuid4(), "signal_type": "FCR", "target_kw": 10.0, "vehicle_id": vehicle_id,
        "allocated_kw": 5.0, "setpoint_kw": 5.0, "status": "acked", "acknowledged": True,
        "ack_latency_s": 0.05, "fallback_round": 0, "score": 0.5,
    }  # fmt: skip


def signal_with_dispatch(fleet: Fleet | None) -> Dispatch:
    now = timezone.now()
    signal = FlexibilitySignal.objects.create(
        signal_type="FCR", power_kw=10, start_at=now, duration_s=300, valid_until=now + timedelta(minutes=5),
        fleet=fleet,
    )  # fmt: skip
    return Dispatch.objects.create(signal=signal, round=0, target_kw=10)


@pytest.fixture
def world():
    """Two fleets with a vehicle and a dispatch each, and a dispatch for every fleet."""
    paris = Fleet.objects.create(id="paris", name="Paris")
    lyon = Fleet.objects.create(id="lyon", name="Lyon")
    for fleet, vid in ((paris, "ev-paris"), (lyon, "ev-lyon")):
        Site.objects.create(fleet=fleet, name="Depot")
        Vehicle.objects.create(id=vid, fleet=fleet, battery_kwh=50, max_charge_kw=11, max_discharge_kw=11)
    return {
        "paris": paris,
        "lyon": lyon,
        "paris_dispatch": signal_with_dispatch(paris),
        "lyon_dispatch": signal_with_dispatch(lyon),
        "everywhere_dispatch": signal_with_dispatch(None),
    }


@pytest.fixture
def paris(client, world) -> Bearer:
    return Bearer(client, issue("paris"))


def ids(response, key: str = "id") -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(row[key] for row in response.json()["results"])


VEHICLE = {"id": "ev-new", "battery_kwh": 40, "max_charge_kw": 7, "max_discharge_kw": 7}
SIGNAL = {"signal_type": "FCR", "power_kw": 5, "duration_s": 60}


# --- 401: no credentials, bad credentials ---------------------------------------------


def test_no_credentials_is_a_401_saying_how_to_authenticate(client, world):
    response = client.get("/api/vehicles/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert "credentials were not provided" in response.json()["detail"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer v2g_00000000_unknownsecretunknownsecret", "unknown API token"),
        ("Bearer not-even-the-format", "unknown API token"),
        ("Bearer ", "malformed Authorization header"),
        ("Bearer two words", "malformed Authorization header"),
    ],
)
def test_a_bad_token_is_a_401_naming_the_problem_without_echoing_it(client, world, header, message):
    response = client.get("/api/vehicles/", headers={"Authorization": header})

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert message in response.json()["detail"]
    secret = header.removeprefix("Bearer ").strip()
    if secret:
        assert secret.split()[0] not in response.content.decode()


def test_a_token_with_a_changed_secret_is_unknown(client, world):
    token = issue("paris")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")  # same prefix, wrong secret

    assert Bearer(client, forged).get("/api/vehicles/").json()["detail"] == "unknown API token"


def test_an_expired_token_is_a_401_saying_so(client, world):
    token, plaintext = services.api_token_create(
        name="short-lived", fleet_ids=["paris"], expires_at=timezone.now() + timedelta(days=1)
    )
    assert Bearer(client, plaintext).get("/api/vehicles/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = Bearer(client, plaintext).get("/api/vehicles/")

    assert response.status_code == 401
    assert "API token expired at" in response.json()["detail"]
    assert plaintext not in response.content.decode()


def test_a_revoked_token_is_a_401_saying_so(client, world):
    token, plaintext = services.api_token_create(name="ci", fleet_ids=["paris"])
    assert services.api_token_revoke(token_ids=[token.pk]) == 1
    assert services.api_token_revoke(token_ids=[token.pk]) == 0  # once

    response = Bearer(client, plaintext).get("/api/vehicles/")

    assert response.status_code == 401
    assert "API token revoked at" in response.json()["detail"]


def test_only_the_hash_is_stored(world):
    token, plaintext = services.api_token_create(name="ci", fleet_ids=["paris", "lyon"])
    secret = plaintext[len(f"v2g_{token.prefix}_") :]

    row = ApiToken.objects.filter(pk=token.pk).values().get()
    stored = " ".join(str(value) for value in row.values())

    assert plaintext.startswith(f"v2g_{token.prefix}_") and len(plaintext) > 40
    assert row["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in stored
    assert secret not in stored


def test_last_used_is_recorded_at_most_once_a_minute(client, world):
    token, plaintext = services.api_token_create(name="ci", fleet_ids=["paris"])
    api = Bearer(client, plaintext)

    api.get("/api/fleets/")
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    api.get("/api/fleets/")
    assert first is not None
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    api.get("/api/fleets/")
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first


def test_sessions_of_staff_users_only(client, world, django_user_model):
    client.force_login(django_user_model.objects.create_user("driver", password="pw-driver-1"))
    response = client.get("/api/vehicles/")
    assert response.status_code == 401
    assert "staff users only" in response.json()["detail"]

    client.force_login(operator("ops"))
    assert ids(client.get("/api/vehicles/")) == ["ev-lyon", "ev-paris"]  # an operator of every fleet


def test_a_token_gives_no_admin_access(client, world):
    response = client.get(
        "/admin/fleet/vehicle/", headers={"Authorization": f"Bearer {issue(all_fleets=True)}"}
    )

    assert response.status_code == 302  # to the login page


# --- per-fleet isolation ---------------------------------------------------------------


def test_fleets_list_and_detail_are_isolated(paris):
    assert ids(paris.get("/api/fleets/")) == ["paris"]
    assert paris.get("/api/fleets/paris/").status_code == 200
    assert paris.get("/api/fleets/lyon/").status_code == 404
    assert paris.patch("/api/fleets/lyon/", {"name": "Mine"}).status_code == 404
    assert Fleet.objects.get(id="lyon").name == "Lyon"


def test_only_an_all_fleet_token_creates_fleets(client, paris):
    response = paris.post("/api/fleets/", {"id": "nice", "name": "Nice"})
    assert response.status_code == 403
    assert "all fleets" in response.json()["detail"]

    everywhere = Bearer(client, issue(all_fleets=True))
    assert everywhere.post("/api/fleets/", {"id": "nice", "name": "Nice"}).status_code == 201


def test_vehicles_list_and_detail_are_isolated(paris):
    assert ids(paris.get("/api/vehicles/")) == ["ev-paris"]
    assert ids(paris.get("/api/vehicles/?fleet_id=paris")) == ["ev-paris"]
    assert paris.get("/api/vehicles/ev-paris/").status_code == 200
    for response in (
        paris.get("/api/vehicles/ev-lyon/"),
        paris.patch("/api/vehicles/ev-lyon/", {"active": False}),
        paris.delete("/api/vehicles/ev-lyon/"),
    ):
        assert response.status_code == 404
    assert Vehicle.objects.get(id="ev-lyon").active


def test_naming_a_fleet_outside_the_token_is_a_403(paris):
    for fleet_id in ("lyon", "no-such-fleet"):  # the same answer: no fleet ids disclosed
        response = paris.get(f"/api/vehicles/?fleet_id={fleet_id}")
        assert response.status_code == 403
        assert f"fleet '{fleet_id}' is outside this token's fleets" in response.json()["detail"]


def test_vehicles_are_created_and_moved_only_within_the_token_fleets(paris):
    assert paris.post("/api/vehicles/", {**VEHICLE, "fleet": "lyon"}).status_code == 403
    assert paris.post("/api/vehicles/", {**VEHICLE, "fleet": "no-such-fleet"}).status_code == 403
    assert not Vehicle.objects.filter(id="ev-new").exists()

    created = paris.post("/api/vehicles/", {**VEHICLE, "fleet": "paris", "site": "Depot"})
    assert created.status_code == 201, created.json()

    assert paris.patch("/api/vehicles/ev-new/", {"fleet": "lyon"}).status_code == 403
    assert Vehicle.objects.get(id="ev-new").fleet_id == "paris"


def test_vehicle_status_is_isolated(paris):
    assert ids(paris.get("/api/vehicles/status"), "vehicle_id") == ["ev-paris"]
    assert ids(paris.get("/api/vehicles/status?fleet_id=paris"), "vehicle_id") == ["ev-paris"]
    assert paris.get("/api/vehicles/status?fleet_id=lyon").status_code == 403
    assert paris.get("/api/vehicles/status?fleet_id=bad%20id").status_code == 400  # malformed first


def test_signals_are_submitted_only_for_the_token_fleets(paris):
    assert paris.post("/api/signals/", {**SIGNAL, "fleet_id": "paris"}).status_code == 201
    for body in ({**SIGNAL, "fleet_id": "lyon"}, {**SIGNAL, "fleet_id": "no-such-fleet"}, SIGNAL):
        response = paris.post("/api/signals/", body)
        assert response.status_code == 403, body
        assert "fleet_id" in response.json()["detail"]
    # A signal without fleet_id goes to every fleet: not for a token limited to some.
    assert "name one of them" in paris.post("/api/signals/", SIGNAL).json()["detail"]
    assert FlexibilitySignal.objects.filter(power_kw=SIGNAL["power_kw"]).count() == 1


def test_an_all_fleet_token_submits_signals_for_every_fleet(client, world):
    everywhere = Bearer(client, issue(all_fleets=True))

    assert everywhere.post("/api/signals/", SIGNAL).status_code == 201
    assert everywhere.post("/api/signals/", {**SIGNAL, "fleet_id": "lyon"}).status_code == 201
    assert everywhere.post("/api/signals/", {**SIGNAL, "fleet_id": "nowhere"}).status_code == 400


def test_dispatches_are_isolated(paris, world):
    assert paris.get(f"/api/dispatches/{world['paris_dispatch'].id}/").status_code == 200
    for other in (world["lyon_dispatch"], world["everywhere_dispatch"]):
        response = paris.get(f"/api/dispatches/{other.id}/")
        assert response.status_code == 404
        assert response.json()["detail"] == f"no dispatch {other.id}"  # as if it did not exist
    assert paris.get(f"/api/dispatches/{uuid.uuid4()}/").status_code == 404


def test_a_signal_submitted_by_a_token_can_be_followed_by_it(paris):
    created = paris.post("/api/signals/", {**SIGNAL, "fleet_id": "paris"}).json()

    assert paris.get(created["url"]).json()["dispatch_id"] == created["dispatch_id"]


def test_a_token_for_several_fleets_sees_them_all_and_only_them(client, world):
    Fleet.objects.create(id="nice", name="Nice")
    both = Bearer(client, issue("paris", "lyon"))

    assert ids(both.get("/api/fleets/")) == ["lyon", "paris"]
    assert ids(both.get("/api/vehicles/")) == ["ev-lyon", "ev-paris"]
    assert both.get(f"/api/dispatches/{world['lyon_dispatch'].id}/").status_code == 200
    assert both.get(f"/api/dispatches/{world['everywhere_dispatch'].id}/").status_code == 404


def test_an_all_fleet_token_sees_every_fleet_including_new_ones(client, world):
    everywhere = Bearer(client, issue(all_fleets=True))
    Fleet.objects.create(id="nice", name="Nice")

    assert ids(everywhere.get("/api/fleets/")) == ["lyon", "nice", "paris"]
    assert everywhere.get(f"/api/dispatches/{world['everywhere_dispatch'].id}/").status_code == 200


def test_the_dispatch_log_shows_only_the_token_fleets_vehicles(client, world):
    dispatch_log_write(
        [
            log_record("ev-paris", minutes=0),
            log_record("ev-lyon", minutes=1),
            log_record("ev-gone", minutes=2),
        ]
    )
    paris = Bearer(client, issue("paris"))
    everywhere = Bearer(client, issue(all_fleets=True))

    assert [r["vehicle_id"] for r in paris.get("/api/dispatch/logs").json()["results"]] == ["ev-paris"]
    assert paris.get("/api/dispatch/logs?vehicle_id=ev-lyon").json()["results"] == []  # as if unknown
    # A vehicle no longer in the registry has no fleet: all-fleet callers only.
    assert [r["vehicle_id"] for r in everywhere.get("/api/dispatch/logs").json()["results"]] == [
        "ev-gone", "ev-lyon", "ev-paris",
    ]  # fmt: skip


def test_the_dispatch_log_pages_of_a_token_stay_in_its_fleets(client, world):
    Vehicle.objects.create(
        id="ev-paris-2", fleet=world["paris"], battery_kwh=50, max_charge_kw=11, max_discharge_kw=11
    )
    dispatch_log_write(
        [log_record(vid, minutes=m) for m in range(5) for vid in ("ev-paris", "ev-lyon", "ev-paris-2")]
    )
    paris, seen = Bearer(client, issue("paris")), []
    url = "/api/dispatch/logs?page_size=3&ordering=at"
    while url:
        body = paris.get(url).json()
        seen += [r["vehicle_id"] for r in body["results"]]
        url = body["next"]

    assert len(seen) == 10 and set(seen) == {"ev-paris", "ev-paris-2"}


# --- the static token of the configuration ---------------------------------------------

STATIC = "static-token-of-the-config-0123"


def test_the_static_token_is_off_by_default(client, world, settings):
    assert settings.V2G.api.static_token.get_secret_value() == ""

    assert Bearer(client, STATIC).get("/api/vehicles/").status_code == 401
    assert Bearer(client, "").get("/api/vehicles/").status_code == 401


def test_the_static_token_when_configured(client, world, settings):
    settings.V2G = replace(settings.V2G, api=replace(settings.V2G.api, static_token=STATIC))

    assert ids(Bearer(client, STATIC).get("/api/vehicles/")) == ["ev-lyon", "ev-paris"]
    assert Bearer(client, STATIC[:-1]).get("/api/vehicles/").status_code == 401


def test_the_static_token_limited_to_some_fleets(client, world, settings):
    settings.V2G = replace(
        settings.V2G, api=replace(settings.V2G.api, static_token=STATIC, static_token_fleets=["lyon"])
    )
    static = Bearer(client, STATIC)

    assert ids(static.get("/api/vehicles/")) == ["ev-lyon"]
    assert static.get("/api/vehicles/?fleet_id=paris").status_code == 403


# --- throttling ------------------------------------------------------------------------


@pytest.mark.services  # the throttle counters are in Redis
def test_a_token_beyond_its_rate_gets_429_with_retry_after(client, world, settings, django_user_model):
    settings.V2G = replace(settings.V2G, api=replace(settings.V2G.api, throttle_rate="3/min"))
    first, second = Bearer(client, issue("paris")), Bearer(client, issue("paris"))

    assert [first.get("/api/fleets/").status_code for _ in range(3)] == [200] * 3
    refused = first.get("/api/fleets/")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"].lower()
    assert second.get("/api/fleets/").status_code == 200  # per token

    # Staff sessions are not throttled.
    client.force_login(operator("ops"))
    assert {client.get("/api/fleets/").status_code for _ in range(5)} == {200}


def test_an_empty_rate_turns_throttling_off(client, world, settings):
    settings.V2G = replace(settings.V2G, api=replace(settings.V2G.api, throttle_rate=""))
    api = Bearer(client, issue("paris"))

    assert {api.get("/api/fleets/").status_code for _ in range(5)} == {200}


def test_an_unreachable_throttle_cache_lets_requests_through(client, world, settings):
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2},
        },
    }

    assert Bearer(client, issue("paris")).get("/api/fleets/").status_code == 200


# --- CORS --------------------------------------------------------------------------------

ORIGIN = "https://dashboard.example.com"


def test_no_cors_headers_by_default(client, world):
    api = Bearer(client, issue("paris"))

    response = api.get("/api/fleets/", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    preflight = client.options(
        "/api/fleets/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


@pytest.fixture
def cors(settings):
    # What settings derive from api.cors_allowed_origins (see the subprocess test below).
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    settings.CORS_URLS_REGEX = r"^/api/"


def test_cors_headers_only_for_configured_origins_and_only_on_the_api(client, world, cors):
    api = Bearer(client, issue("paris"))

    allowed = api.get("/api/fleets/", headers={"Origin": ORIGIN})
    assert allowed["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = api.get("/api/fleets/", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in client.get("/metrics", headers={"Origin": ORIGIN}).headers

    # The browser's preflight carries no token; it is answered without one.
    preflight = client.options(
        "/api/fleets/",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in preflight["Access-Control-Allow-Headers"]


def test_cors_settings_follow_the_configuration():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.CORS_ALLOWED_ORIGINS, s.CORS_URLS_REGEX)"
    )
    run = lambda **env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(**env), capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout.strip()  # fmt: skip

    assert run(K_API__CORS_ALLOWED_ORIGINS="") == "[] (?!)"
    assert run(K_API__CORS_ALLOWED_ORIGINS=ORIGIN) == f"['{ORIGIN}'] ^/api/"


# --- issuing: the admin and the command ------------------------------------------------


def test_the_admin_issues_a_token_and_shows_it_once(admin_client, client, world):
    response = admin_client.post(
        "/admin/fleet/apitoken/add/",
        {"name": "EMS integration", "fleets": ["paris"], "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    assert response.status_code == 200
    token = ApiToken.objects.get(name="EMS integration")
    shown = [str(m) for m in response.context["messages"] if "<code>v2g_" in str(m)]
    assert len(shown) == 1
    plaintext = shown[0].split("<code>")[1].split("</code>")[0]
    assert token.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert token.created_by.username == "admin"
    assert list(token.fleets.values_list("id", flat=True)) == ["paris"]
    # It works, for its fleet only.
    assert ids(Bearer(client, plaintext).get("/api/vehicles/")) == ["ev-paris"]
    # Never shown again: not in the list, not on its page.
    for page in ("/admin/fleet/apitoken/", f"/admin/fleet/apitoken/{token.pk}/change/"):
        body = admin_client.get(page).content.decode()
        assert f"v2g_{token.prefix}_" in body and plaintext not in body


def test_the_admin_wants_some_fleets_or_all(admin_client, world):
    neither = admin_client.post(
        "/admin/fleet/apitoken/add/", {"name": "x", "expires_at_0": "", "expires_at_1": ""}
    )
    both = admin_client.post(
        "/admin/fleet/apitoken/add/",
        {"name": "x", "fleets": ["paris"], "all_fleets": "on", "expires_at_0": "", "expires_at_1": ""},
    )

    assert neither.status_code == both.status_code == 200  # the form again, with its errors
    assert "Choose the fleets this token may see" in neither.content.decode()
    assert "not both" in both.content.decode()
    assert not ApiToken.objects.exists()


def test_the_admin_revokes_tokens(admin_client, client, world):
    token, plaintext = services.api_token_create(name="ci", fleet_ids=["paris"])

    response = admin_client.post(
        "/admin/fleet/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )

    assert "1 API token(s) revoked" in response.content.decode()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert Bearer(client, plaintext).get("/api/fleets/").status_code == 401


def create_by_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_token_create", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_the_command_prints_a_working_token_once(client, world):
    plaintext, note = create_by_command("--name", "ci", "--fleet", "paris", "--fleet", "lyon")

    token = ApiToken.objects.get(name="ci")
    assert plaintext.startswith(f"v2g_{token.prefix}_") and "\n" not in plaintext
    assert plaintext not in note and "lyon, paris" in note and "never expires" in note
    assert ids(Bearer(client, plaintext).get("/api/vehicles/")) == ["ev-lyon", "ev-paris"]


def test_the_command_for_all_fleets_with_an_expiry(world):
    _plaintext, note = create_by_command("--name", "demo", "--all-fleets", "--expires-days", "7")

    token = ApiToken.objects.get(name="demo")
    assert token.all_fleets and not token.fleets.exists()
    assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
    assert "all fleets" in note


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "x", "--fleet", "nowhere"], "no fleet 'nowhere'"),
        (["--name", "x"], "one of the arguments --fleet --all-fleets is required"),
        (["--name", "x", "--fleet", "paris", "--all-fleets"], "not allowed with argument"),
        (["--name", "x", "--all-fleets", "--expires-days", "0"], "--expires-days"),
        (["--name", " ", "--all-fleets"], "needs a name"),
    ],
)
def test_the_command_refuses_bad_arguments(world, args, message):
    with pytest.raises(CommandError) as info:
        create_by_command(*args)

    assert message in str(info.value)
    assert not ApiToken.objects.exists()
