"""The OpenAPI schema (/api/schema/) and its documentation page (/api/docs/)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from django.contrib.staticfiles import finders

from tests.conftest import ROOT, subprocess_env

OPERATIONS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema as `manage.py spectacular` writes it, which must be valid
    OpenAPI 3 (--validate) and come without a single warning (--fail-on-warn)."""
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    run = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(path)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stderr and "Error" not in run.stderr, run.stderr
    return yaml.safe_load(path.read_text())


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in OPERATIONS:
                yield f"{method.upper()} {path}", operation


def test_schema_is_valid_and_generated_without_warnings(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "v2g API"
    paths = set(schema["paths"])
    assert {"/api/fleets/", "/api/vehicles/", "/api/vehicles/status", "/api/signals/"} <= paths
    assert "/api/dispatches/{id}/" in paths
    assert "/api/vehicles/status/" not in paths  # the trailing-slash alias is not documented twice


def test_every_operation_is_described_with_its_parameters_and_errors(schema):
    problems = []
    for name, operation in operations(schema):
        if not operation.get("summary"):
            problems.append(f"{name}: no summary")
        if not operation.get("security") or {} in operation["security"]:
            problems.append(f"{name}: not marked as needing authentication")
        for parameter in operation.get("parameters", []):
            if not parameter.get("description") or "type" not in parameter.get("schema", {}):
                problems.append(f"{name}: parameter {parameter['name']} has no description or type")
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        if not success:
            problems.append(f"{name}: no success response")
        for code in success:
            if code != "204" and not responses[code].get("content"):
                problems.append(f"{name}: {code} has no body documented")
        has_input = "requestBody" in operation or any(
            p["in"] == "query" for p in operation.get("parameters", [])
        )
        expected = {"401", "403", "429"} | ({"400"} if has_input else set())
        expected |= {"404"} if "{" in name else set()
        if missing := expected - set(responses):
            problems.append(f"{name}: undocumented {sorted(missing)}")
        if "requestBody" in operation and set(operation["requestBody"]["content"]) != {"application/json"}:
            problems.append(f"{name}: request body not documented as JSON")
    assert not problems, "\n".join(problems)


def test_errors_have_their_body_documented(schema):
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["detail"]
    field_errors, unparsable = components["ValidationError"]["anyOf"]
    assert field_errors["additionalProperties"] == {"type": "array", "items": {"type": "string"}}
    assert unparsable == {"$ref": "#/components/schemas/Error"}
    signals = schema["paths"]["/api/signals/"]["post"]["responses"]
    assert signals["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationError")
    assert signals["201"]["headers"]["Location"]["schema"]["format"] == "uri"
    assert signals["201"]["links"]["GetDispatch"]["operationId"] == "dispatches_retrieve"


def test_status_rows_are_documented_though_the_view_returns_plain_dicts(schema):
    status = schema["paths"]["/api/vehicles/status"]["get"]
    page = status["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    row = schema["components"]["schemas"][page]["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][row]["properties"]) == {
        "vehicle_id",
        "current_status",
        "forecasted_plugin_window",
        "forecasted_soc",
        "next_dispatch_window",
        "last_dispatch_decision",
    }
    parameters = {p["name"]: p for p in status["parameters"]}
    assert parameters["fleet_id"]["schema"]["pattern"] == "^[-a-zA-Z0-9_]+$"
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10000,
        "default": 100,
    }


def test_bearer_tokens_are_the_documented_authentication(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    for name, operation in operations(schema):
        assert {"bearerAuth": []} in operation["security"], name


@pytest.mark.django_db
def test_schema_endpoint_is_public_json_or_yaml(client):
    as_json = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert as_json.status_code == 200
    assert as_json.json()["info"]["title"] == "v2g API"
    as_yaml = client.get("/api/schema/")
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.content)["paths"]


@pytest.mark.django_db
def test_docs_page_loads_only_our_own_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/api/schema/" in html
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert urls, html
    assert not [url for url in urls if "//" in url], "the page must not load anything from elsewhere"
    static = [url.removeprefix("/static/") for url in urls if url.startswith("/static/")]
    assert any(path.endswith("swagger-ui-bundle.js") for path in static), urls
    assert all(finders.find(path) for path in static), static


def test_collectstatic_serves_the_docs_assets_as_the_image_does(tmp_path):
    """The Dockerfile's collectstatic (debug off: hashed, compressed files for
    WhiteNoise) takes the Swagger UI assets, and the page then names them."""
    script = textwrap.dedent(
        f"""
        import django
        from django.conf import settings
        settings._setup()
        settings._wrapped.STATIC_ROOT = {str(tmp_path)!r}
        django.setup()
        from django.core.management import call_command
        from django.test import Client
        call_command("collectstatic", "--noinput", verbosity=0)
        print(Client(HTTP_HOST="localhost").get("/api/docs/").content.decode())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=subprocess_env(
            K_WEB__DEBUG="false",
            K_WEB__SECRET_KEY="collectstatic-only-not-a-runtime-secret-0123456789abcdef",
            K_WEB__SSL_REDIRECT="false",  # the test client speaks plain HTTP
        ),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assets = re.findall(r"""["']/static/([^"']+)["']""", run.stdout)
    assert any(re.search(r"swagger-ui-bundle\.[0-9a-f]{12}\.js$", asset) for asset in assets), run.stdout
    assert all((tmp_path / asset).is_file() for asset in assets), assets
