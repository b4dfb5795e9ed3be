"""A small mock of RTE's activation API, for demos and tests (issue 10, ``rte.mode: mock``).

It serves exactly the shape described in ``dispatch.rte_api``: an OAuth 2.0
client-credentials token endpoint and the activations endpoint, with real
bearer tokens that expire. Activations come from a synthetic generator
scenario (``dispatch.generator``: each generated signal is published as an
activation when its time comes) and from whoever POSTs them.

No Django: it runs inside the connector process (``manage.py rte_connector``
in mock mode), on its own (``manage.py rte_mock``), or in a test.

Paths (besides ``TOKEN_PATH`` and ``ACTIVATIONS_PATH``), for operators and
tests, loopback only like the rest:

- ``POST /mock/activations``: publish an activation (or a list) in the wire
  form; ``publication_date`` defaults to now. 201 with the ids.
- ``POST /mock/faults``: ``{"count": N, "status": 503, "retry_after": 2}``
  makes the next N activation requests fail that way.
- ``POST /mock/revoke``: revoke every token issued so far (the next API call
  gets 401 ``invalid_token``, as after an expiry on RTE's side).
- ``GET /mock/stats``: request counters.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from dispatch.generator import GeneratedSignal, GeneratorError
from dispatch.rte_api import Activation, activation_dump, activation_parse

log = logging.getLogger(__name__)

TOKEN_PATH = "/token/oauth/"
ACTIVATIONS_PATH = "/open_api/balancing_activations/v1/activations"
MAX_BODY = 1 << 20


def _now() -> datetime:
    return datetime.now(UTC)


class MockRte:
    """The mock's state: tokens, published activations, injected faults, counters."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_ttl_s: float = 3600,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("the mock RTE server needs a client_id and a client_secret")
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._tokens: dict[str, datetime] = {}
        self._published: list[tuple[datetime, object]] = []  # (publication time, item as served)
        self._ids: set[str] = set()
        self._faults: list[tuple[int, float | None]] = []
        self._feed: Iterator[GeneratedSignal] | None = None
        self._feed_next: GeneratedSignal | None = None
        self._feed_prefix = ""
        self._feed_count = 0

    # --- what tests and the connector command drive ------------------------------

    def feed(self, signals: Iterator[GeneratedSignal], *, prefix: str) -> None:
        """Publish each generated signal as an activation once its time has come.

        ``prefix`` makes the ids unique per run (e.g. the run's start time), so
        a restarted mock never reuses an id with a different meaning.
        """
        with self._lock:
            self._feed, self._feed_next, self._feed_prefix, self._feed_count = signals, None, prefix, 0

    def publish(self, item: dict) -> Activation:
        """Publish one activation (wire form). A repeated id is ignored, as RTE's ids are unique."""
        item = dict(item)
        item.setdefault("publication_date", self.clock().isoformat())
        activation = activation_parse(item)  # the mock publishes only what the API allows
        with self._lock:
            if activation.activation_id not in self._ids:
                self._ids.add(activation.activation_id)
                self._published.append((activation.published_at or self.clock(), item))
        return activation

    def publish_raw(self, item: object) -> None:
        """Serve ``item`` as it is, unchecked, published now: what a faulty API could send."""
        with self._lock:
            self._published.append((self.clock(), item))

    def fail_next(self, count: int, *, status: int = 503, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * count)

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # --- the API -----------------------------------------------------------------

    def token_issue(self, authorization: str | None, form: dict[str, list[str]]) -> tuple[int, dict]:
        self.stats["token_requests"] += 1
        if form.get("grant_type") != ["client_credentials"]:
            return 400, {"error": "unsupported_grant_type"}
        if authorization != self._basic():
            self.stats["token_refused"] += 1
            return 401, {"error": "invalid_client"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + timedelta(seconds=self.token_ttl_s)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl_s}

    def activations_list(
        self, authorization: str | None, query: dict[str, list[str]]
    ) -> tuple[int, dict, dict]:
        self.stats["api_requests"] += 1
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault:
            status, retry_after = fault
            self.stats["api_faults"] += 1
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return status, {"error": "server_error", "error_description": "injected fault"}, headers
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            expires = self._tokens.get(token)
        if (
            not authorization
            or not authorization.startswith("Bearer ")
            or not expires
            or expires <= self.clock()
        ):
            self.stats["api_unauthorized"] += 1
            return (
                401,
                {"error": "invalid_token", "error_description": "expired, revoked or unknown token"},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        try:
            start, end = (datetime.fromisoformat(query[key][0]) for key in ("start_date", "end_date"))
            if start.tzinfo is None or end.tzinfo is None:
                raise ValueError
        except (KeyError, ValueError):
            return (
                400,
                {
                    "error": "invalid_request",
                    "error_description": "start_date and end_date: ISO 8601 with offset",
                },
                {},
            )
        self._feed_publish()
        with self._lock:
            items = [item for published, item in self._published if start <= published < end]
        self.stats["activations_served"] += len(items)
        return 200, {"activations": items}, {}

    def _basic(self) -> str:
        raw = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _feed_publish(self) -> None:
        """Publish every generated signal whose time has come."""
        now = self.clock()
        with self._lock:
            while self._feed is not None:
                if self._feed_next is None:
                    try:
                        self._feed_next = next(self._feed, None)
                    except GeneratorError as exc:  # e.g. an unreadable replay file: publish nothing more
                        log.error("mock RTE server: the scenario stopped: %s", exc)
                        self._feed_next = None
                    if self._feed_next is None:
                        self._feed = None
                        break
                item = self._feed_next
                if item.at > now:
                    break
                self._feed_next = None
                self._feed_count += 1
                wire = activation_dump(
                    Activation(
                        activation_id=f"{self._feed_prefix}-{self._feed_count:06d}",
                        signal_type=item.signal_type,
                        power_kw=item.power_kw,
                        start_at=item.at,
                        end_at=item.at + timedelta(seconds=item.duration_s),
                        published_at=item.at,
                    )
                )
                self._ids.add(wire["activation_id"])
                self._published.append((item.at, wire))

    # --- serving -----------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> MockRteServer:
        return MockRteServer(self, host, port)


class MockRteServer:
    """The mock on a real socket, in a daemon thread; ``close()`` stops it."""

    def __init__(self, mock: MockRte, host: str, port: int) -> None:
        self.mock = mock
        self.httpd = ThreadingHTTPServer((host, port), _handler(mock))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="rte-mock", daemon=True)
        self.thread.start()
        log.info("mock RTE server on http://%s:%s", self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def api_url(self) -> str:
        return self.url + ACTIVATIONS_PATH

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MockRteServer:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _handler(mock: MockRte) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rte-mock/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # the access log goes to logging, not stderr
            log.debug("mock RTE: " + fmt, *args)

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(length)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == ACTIVATIONS_PATH:
                status, body, headers = mock.activations_list(
                    self.headers.get("Authorization"), parse_qs(url.query)
                )
                self._send(status, body, headers)
            elif url.path == "/mock/stats":
                self._send(200, dict(mock.stats))
            else:
                self._send(404, {"error": "not_found", "error_description": url.path})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            try:
                body = self._body()
            except ValueError as exc:
                self._send(413, {"error": "invalid_request", "error_description": str(exc)})
                return
            if url.path == TOKEN_PATH:
                form = parse_qs(body.decode("latin-1"))
                self._send(*mock.token_issue(self.headers.get("Authorization"), form))
                return
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                self._send(400, {"error": "invalid_request", "error_description": "body: not JSON"})
                return
            if url.path == "/mock/activations":
                items = payload if isinstance(payload, list) else [payload]
                try:
                    ids = [mock.publish(item).activation_id for item in items]
                except (ValueError, TypeError) as exc:  # ActivationInvalid is a ValueError
                    self._send(400, {"error": "invalid_request", "error_description": str(exc)})
                    return
                self._send(HTTPStatus.CREATED, {"activation_ids": ids})
            elif url.path == "/mock/faults" and isinstance(payload, dict):
                mock.fail_next(
                    int(payload.get("count", 1)),
                    status=int(payload.get("status", 503)),
                    retry_after=payload.get("retry_after"),
                )
                self._send(200, {"pending_faults": len(mock._faults)})
            elif url.path == "/mock/revoke":
                mock.revoke_tokens()
                self._send(200, {"revoked": True})
            else:
                self._send(404, {"error": "not_found", "error_description": url.path})

    return Handler
