"""The web endpoints: /healthz, /readyz, /metrics, /api/ and /admin/."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, operator, replace


def _assert_alive(client) -> None:
    """/healthz is liveness: 200 while the process serves, whatever is down."""
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ok"
    assert "checks" not in response.json()  # no dependency is checked


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_and_healthz_are_ok_when_database_broker_and_mqtt_answer(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "mqtt"}
    assert all(check["ok"] for check in body["checks"].values())
    _assert_alive(client)


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_is_503_and_names_mqtt_when_the_broker_is_down(client, settings):
    port = free_port()
    settings.V2G = replace(
        settings.V2G,
        mqtt=replace(settings.V2G.mqtt, url=f"tcp://127.0.0.1:{port}", username="op", password="s3cret-pw"),
    )
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["failing"] == ["mqtt"]
    assert body["checks"]["mqtt"]["ok"] is False
    assert f"MQTT broker 127.0.0.1:{port}" in body["checks"]["mqtt"]["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "s3cret" not in response.content.decode()
    _assert_alive(client)


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_names_the_tls_file_key_that_cannot_be_loaded(client, settings, tmp_path):
    missing = tmp_path / "ca.crt"
    settings.V2G = replace(
        settings.V2G, mqtt=replace(settings.V2G.mqtt, url="ssl://127.0.0.1:8883", ca_bundle=str(missing))
    )
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["mqtt"]
    assert (
        body["checks"]["mqtt"]["error"] == f"mqtt.ca_bundle: cannot read {missing}: No such file or directory"
    )
    _assert_alive(client)


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_is_503_and_names_the_celery_broker_when_it_is_down(client, settings):
    port = free_port()
    settings.CELERY_BROKER_URL = f"redis://:pa55word@127.0.0.1:{port}/0"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["ok"] is False
    assert f"Celery broker redis://127.0.0.1:{port}" in body["checks"]["broker"]["error"]
    assert "pa55word" not in response.content.decode()
    _assert_alive(client)


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_names_every_component_that_is_down(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.V2G = replace(
        settings.V2G, mqtt=replace(settings.V2G.mqtt, url=f"tcp://127.0.0.1:{free_port()}")
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker", "mqtt"]
    _assert_alive(client)


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_is_503_and_names_the_database_when_it_is_down(client, monkeypatch):
    from django.db import connections

    if connections["default"].vendor != "postgresql":
        pytest.skip("needs a database server (the tests run on PostgreSQL)")
    port = free_port()
    # New connections (the check runs in a helper thread) go to a closed port.
    dead = {
        **connections.settings["default"],
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PASSWORD": "db-s3cret",
    }
    monkeypatch.setitem(connections.settings, "default", dead)
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["database"]
    assert f"database postgresql://127.0.0.1:{port}/" in body["checks"]["database"]["error"]
    assert "db-s3cret" not in response.content.decode()
    _assert_alive(client)


def test_health_endpoints_answer_get_only(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


@pytest.mark.django_db  # the KPI gauges are read from the database at each scrape
def test_metrics_endpoint_serves_prometheus_text(client):
    import dispatch.metrics  # noqa: F401 - the counters exist (at 0) once declared

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    # Counter families are listed without their _total suffix by the parser.
    assert {"mqtt_publish_success", "mqtt_publish_failure"} <= names
    assert {"vehicle_injected_energy_kwh", "vehicle_co2_avoided_grams", "vehicle_energy_ratio"} <= names


@pytest.mark.django_db
def test_api_root_needs_a_login_and_lists_the_registry(client, django_user_model):
    response = client.get("/api/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    user = operator("operator")
    client.force_login(user)
    body = client.get("/api/", HTTP_ACCEPT="application/json").json()
    assert {"fleets", "vehicles"} <= set(body)


@pytest.mark.django_db
def test_admin_login_page_and_vehicle_screen(admin_client):
    assert admin_client.get("/admin/").status_code == 200
    assert admin_client.get("/admin/fleet/vehicle/").status_code == 200
    assert admin_client.get("/admin/django_celery_beat/periodictask/").status_code == 200
