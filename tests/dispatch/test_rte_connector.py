"""The RTE connector against the mock RTE server, over real HTTP, on the real database.

The mock is a real server on a loopback port; the client is the production
client (httpx + Authlib OAuth2 client credentials). Signals go through
``signal_submit`` (allocation is enqueued on commit, which these tests never do).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from dispatch.models import FlexibilitySignal, RteActivation, RteConnectorState, SignalSource
from dispatch.rte_api import Activation, activation_dump
from dispatch.rte_client import RteAuthError, RteClient, RteProtocolError, RteUnavailable
from dispatch.rte_connector import activations_store, rte_connector_run, rte_poll
from dispatch.rte_mock import MockRte
from fleet.models import Fleet
from tests.conftest import ROOT, database_url, free_port, metric_value, stop_process, subprocess_env, wait_for
from v2g_project.config import RteConfig

pytestmark = pytest.mark.django_db

CLIENT_ID, SECRET = "aggregator-42", "s3cret-never-logged-XYZ"
CFG = RteConfig(poll_interval_seconds=5, overlap_seconds=300, lookback_seconds=3600, backoff_max_seconds=60)


class Clock:
    """The mock's clock, movable by the test."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def mock(clock):
    rte = MockRte(client_id=CLIENT_ID, client_secret=SECRET, token_ttl_s=3600, clock=clock)
    server = rte.serve("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def rte(mock):
    with RteClient(
        token_url=mock.token_url, api_url=mock.api_url, client_id=CLIENT_ID, client_secret=SECRET, timeout_s=5
    ) as rte_client:
        yield rte_client


def activation(n: int, *, start_in_s: float = 0, lasts_s: float = 600, mw: float = 0.02, **changes) -> dict:
    start = datetime.now(UTC) + timedelta(seconds=start_in_s)
    wire = activation_dump(
        Activation(f"RTE-{n:05d}", "aFRR", mw * 1000, start, start + timedelta(seconds=lasts_s), start)
    )
    wire.update(changes)
    return wire


def test_activations_become_signals_with_rte_as_source(mock, rte):
    mock.mock.publish(activation(1, mw=0.05))
    mock.mock.publish(activation(2, direction="DOWNWARD", product="mFRR"))

    result = rte_poll(rte, cfg=CFG)

    assert (result.received, result.new, result.submitted) == (2, 2, 2)
    signals = {s.external_id: s for s in FlexibilitySignal.objects.filter(source=SignalSource.RTE)}
    assert (signals["RTE-00001"].signal_type, signals["RTE-00001"].power_kw) == ("aFRR", 50.0)
    assert (signals["RTE-00002"].signal_type, signals["RTE-00002"].power_kw) == ("mFRR", -20.0)
    assert all(s.dispatches.filter(round=0).exists() for s in signals.values())
    row = RteActivation.objects.get(activation_id="RTE-00001")
    assert (row.status, row.signal_id) == ("submitted", signals["RTE-00001"].id)
    assert RteConnectorState.objects.get().polled_until is not None


def test_one_token_serves_many_polls(mock, rte):
    for _ in range(3):
        rte_poll(rte, cfg=CFG)
    assert mock.mock.stats["token_requests"] == 1
    assert mock.mock.stats["api_requests"] == 3
    assert rte.token_fetches == 1


def test_a_revoked_token_is_replaced_and_the_poll_still_succeeds(mock, rte, client):
    rte_poll(rte, cfg=CFG)
    mock.mock.revoke_tokens()
    mock.mock.publish(activation(3))
    before = metric_value(client, "rte_connector_token_fetches_total")

    result = rte_poll(rte, cfg=CFG)

    assert result.submitted == 1
    assert mock.mock.stats["api_unauthorized"] == 1
    assert mock.mock.stats["token_requests"] == 2
    assert metric_value(client, "rte_connector_token_fetches_total") - before == 1


def test_an_expired_token_is_replaced(mock, rte, clock):
    rte_poll(rte, cfg=CFG)
    clock.offset = timedelta(hours=2)  # the server's view: the 1-hour token is long expired
    mock.mock.publish(activation(4))

    assert rte_poll(rte, cfg=CFG).new == 1
    assert mock.mock.stats["token_requests"] == 2


def test_a_token_about_to_expire_is_renewed_before_use(clock):
    """Authlib renews a token 30 s before its expiry: the server never sees it expired."""
    rte = MockRte(client_id=CLIENT_ID, client_secret=SECRET, token_ttl_s=31, clock=clock)
    with (
        rte.serve() as server,
        RteClient(
            token_url=server.token_url, api_url=server.api_url, client_id=CLIENT_ID, client_secret=SECRET
        ) as rte_client,
    ):
        rte_poll(rte_client, cfg=CFG)
        assert rte.stats["token_requests"] == 1
        time.sleep(1.2)  # now within the last 30 s of the token's life
        rte_poll(rte_client, cfg=CFG)
    assert rte.stats["token_requests"] == 2 and rte.stats["api_unauthorized"] == 0


def test_wrong_credentials_are_an_auth_error_that_does_not_leak_the_secret(mock):
    wrong = "wrong-" + SECRET
    with (
        RteClient(
            token_url=mock.token_url, api_url=mock.api_url, client_id=CLIENT_ID, client_secret=wrong
        ) as rte_client,
        pytest.raises(RteAuthError) as caught,
    ):
        rte_poll(rte_client, cfg=CFG)
    assert "invalid_client" in str(caught.value)
    state = RteConnectorState.objects.get()
    assert state.consecutive_failures == 1 and "invalid_client" in state.last_error
    assert SECRET not in state.last_error and SECRET not in str(caught.value)


def test_server_errors_keep_the_cursor_and_report_retry_after(mock, rte):
    rte_poll(rte, cfg=CFG)
    cursor = RteConnectorState.objects.get().polled_until
    mock.mock.fail_next(2, status=503, retry_after=7)

    for failures in (1, 2):
        with pytest.raises(RteUnavailable) as caught:
            rte_poll(rte, cfg=CFG)
        assert caught.value.retry_after_s == 7
        state = RteConnectorState.objects.get()
        assert state.consecutive_failures == failures and state.polled_until == cursor
    mock.mock.publish(activation(5))
    assert rte_poll(rte, cfg=CFG).submitted == 1
    assert RteConnectorState.objects.get().consecutive_failures == 0


def test_an_unreachable_server_is_unavailable(rte):
    with (
        RteClient(
            token_url=f"http://127.0.0.1:{free_port()}/token/oauth/",
            api_url=rte.api_url,
            client_id=CLIENT_ID,
            client_secret=SECRET,
            timeout_s=2,
        ) as dead,
        pytest.raises(RteUnavailable, match=r"token request to http://127\.0\.0\.1"),
    ):
        dead.activations(datetime.now(UTC), datetime.now(UTC))


def test_an_answer_not_in_the_api_shape_is_a_protocol_error(mock, rte):
    rte.api_url = mock.url + "/mock/stats"  # 200 JSON, but no "activations" list
    with pytest.raises(RteProtocolError, match="without an 'activations' list"):
        rte_poll(rte, cfg=CFG)
    assert RteActivation.objects.count() == 0


def test_overlapping_polls_and_repeated_items_make_one_signal_each(mock, rte):
    mock.mock.publish(activation(6))
    rte_poll(rte, cfg=CFG)
    result = rte_poll(rte, cfg=CFG)  # the overlap re-reads activation 6
    assert (result.received, result.new, result.submitted) == (1, 0, 0)
    # The same item twice in one answer, and once more later.
    assert activations_store([activation(7), activation(7)]) == 1
    assert activations_store([activation(7)]) == 0
    assert FlexibilitySignal.objects.filter(source=SignalSource.RTE, external_id="RTE-00006").count() == 1


def test_invalid_activations_are_kept_with_their_reason_and_others_go_through(mock, rte):
    # Past the mock's own validation: what a faulty API could send.
    for item in (activation(8, product="RR"), {"product": "aFRR", "value_mw": 1}, activation(9)):
        mock.mock.publish_raw(item)
    result = rte_poll(rte, cfg=CFG)
    assert (result.new, result.submitted, result.rejected) == (3, 1, 1)
    rejected = {r.activation_id: r.reason for r in RteActivation.objects.filter(status="rejected")}
    assert rejected["RTE-00008"].startswith("product: unknown 'RR'")
    [hashed] = [key for key in rejected if key.startswith("invalid-")]
    assert "activation_id" in rejected[hashed]
    assert rte_poll(rte, cfg=CFG).new == 0  # re-read: recognised, not stored again


def test_nothing_is_lost_across_a_restart(mock, rte, clock):
    """A crash after storing, before submitting: the next connector submits it once.
    An activation that ended while the connector was down is recorded as expired."""
    activations_store([activation(10), activation(11, start_in_s=-1200, lasts_s=600)])
    assert FlexibilitySignal.objects.count() == 0

    with RteClient(
        token_url=mock.token_url, api_url=mock.api_url, client_id=CLIENT_ID, client_secret=SECRET
    ) as restarted:
        result = rte_poll(restarted, cfg=CFG)
    assert (result.submitted, result.expired) == (1, 1)
    assert RteActivation.objects.get(activation_id="RTE-00010").status == "submitted"
    expired = RteActivation.objects.get(activation_id="RTE-00011")
    assert expired.status == "expired" and "before it could be submitted" in expired.reason
    assert rte_poll(rte, cfg=CFG).submitted == 0
    assert FlexibilitySignal.objects.filter(source=SignalSource.RTE).count() == 1


def test_the_first_poll_after_downtime_reads_from_where_the_last_one_ended(mock, rte, clock):
    rte_poll(rte, cfg=CFG)
    last = RteConnectorState.objects.get().polled_until
    # Published while the connector was "down" for 20 minutes: beyond any overlap, still found.
    item = activation(12, lasts_s=3600)
    item["publication_date"] = (last + timedelta(seconds=5)).isoformat()
    mock.mock.publish(item)
    later = datetime.now(UTC) + timedelta(minutes=20)
    assert rte_poll(rte, cfg=CFG, now=later).submitted == 1


def test_the_loop_backs_off_honours_retry_after_and_recovers(mock, rte):
    mock.mock.fail_next(3, status=503)
    mock.mock.fail_next(1, status=429, retry_after=9)
    mock.mock.publish(activation(13))
    stop = threading.Event()
    delays: list[float] = []
    results = []

    made = rte_connector_run(
        stop,
        rte,
        cfg=CFG,
        polls=6,
        wait=lambda s: delays.append(s) or False,
        rng=random.Random(3),
        on_poll=lambda result, delay: results.append(result),
    )

    assert made == 6
    assert results[:4] == [None] * 4 and results[4].submitted == 1
    assert 0.2 <= delays[0] <= 2 and delays[2] <= 8  # exponential from 2 s, with jitter
    assert delays[3] >= 9  # Retry-After of the 429
    assert delays[4] == CFG.poll_interval_seconds  # back to the normal period
    assert len(delays) == 5  # no wait after the last poll


def test_the_loop_survives_a_database_error(mock, rte, monkeypatch):
    from django.db import OperationalError

    from dispatch import rte_connector

    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("connection lost")
        return real(*args, **kwargs)

    real = rte_connector.rte_poll
    monkeypatch.setattr(rte_connector, "rte_poll", flaky)
    results = []
    rte_connector_run(
        threading.Event(), rte, cfg=CFG, polls=2, wait=lambda s: False,
        on_poll=lambda result, delay: results.append(result),
    )  # fmt: skip
    assert results[0] is None and results[1] is not None


def test_the_mock_refuses_a_bad_grant_and_unknown_paths(mock):
    request = urllib.request.Request(mock.token_url, data=b"grant_type=password", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400 and json.load(caught.value)["error"] == "unsupported_grant_type"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(mock.url + "/nope", timeout=5)
    assert caught.value.code == 404


# --- the command, as a real process ---------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_rte_connector_command_in_mock_mode_dispatches_activations_and_stops_cleanly(settings, tmp_path):
    """``manage.py rte_connector`` in mock mode: its mock RTE server publishes a fast
    scenario and accepts injected activations; each becomes one signal; SIGTERM stops it."""
    Fleet.objects.create(id="rte-fleet", name="RTE fleet")
    port = free_port()
    log_path = tmp_path / "rte.log"
    env = subprocess_env(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        K_RTE__MODE="mock",
        K_RTE__MOCK__ADDRESS=f"127.0.0.1:{port}",
        K_RTE__MOCK__SCENARIO="burst",
        K_RTE__POLL_INTERVAL_SECONDS="1",
        K_RTE__FLEET_ID="rte-fleet",
        K_RTEGENERATOR__MIN_INTERVAL_SECONDS="1",
        K_RTEGENERATOR__MAX_INTERVAL_SECONDS="2",
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "rte_connector"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def injected():
            body = json.dumps(activation(99, product="NEBEF", mw=0.1)).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/mock/activations", data=body, method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status == 201
            except OSError:
                return False

        wait_for(injected, 60, "the mock RTE server to accept an activation")
        wait_for(
            lambda: (
                FlexibilitySignal.objects.filter(source="rte", external_id="RTE-00099").exists()
                and FlexibilitySignal.objects.filter(source="rte", external_id__startswith="MOCK-").count()
                >= 3
            ),
            60,
            f"activations to become signals; log:\n{log_path.read_text()[-3000:] if log_path.exists() else ''}",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log_path.read_text()[-3000:]
    finally:
        stop_process(proc)
    output = log_path.read_text()
    assert "mock RTE server on http://127.0.0.1" in output and "[rte] stopped after" in output
    nebef = FlexibilitySignal.objects.get(source="rte", external_id="RTE-00099")
    assert (nebef.signal_type, nebef.power_kw, nebef.fleet_id) == ("NEBEF", 100.0, "rte-fleet")
    ids = list(FlexibilitySignal.objects.filter(source="rte").values_list("external_id", flat=True))
    assert len(ids) == len(set(ids))
    assert RteActivation.objects.filter(status="pending").count() == 0


def test_rte_connector_command_names_a_bad_fleet(settings):
    from tests.test_commands import manage

    result = manage(
        "rte_connector", "--polls", "1",
        DATABASE_URL=database_url(settings.DATABASES["default"]), K_RTE__FLEET_ID="no-such-fleet",
    )  # fmt: skip
    assert result.returncode == 1
    assert "rte.fleet_id: no fleet 'no-such-fleet'" in result.stderr


def test_client_mode_without_credentials_stops_start_up_naming_the_keys():
    from tests.test_commands import manage

    result = manage("check", K_RTE__MODE="client", K_RTE__TOKEN_URL="https://rte.example/token")
    assert result.returncode == 2
    assert "mode 'client' needs api_url, client_id, client_secret" in result.stderr
    result = manage("check", K_RTE__MOCK__ADDRESS="localhost")
    assert result.returncode == 2 and "rte.mock.address" in result.stderr
