"""HTTP client of RTE's activation API: OAuth 2.0 client-credentials tokens and polling (issue 10).

Authlib's httpx ``OAuth2Client`` fetches the token from ``token_url`` (HTTP
Basic client authentication) and fetches a new one shortly before it expires
(``leeway``). A token the server refuses earlier (401 ``invalid_token``:
revoked, or the clocks disagree) is dropped and fetched again once, then the
request is retried once; a second refusal is an :class:`RteAuthError`.

Every failure is one of three exceptions, so the connector knows what to do:
:class:`RteUnavailable` (network, timeout, 429, 5xx: back off and retry,
honouring ``Retry-After``), :class:`RteAuthError` (credentials refused: back
off, log loudly) and :class:`RteProtocolError` (an answer not in the API's
shape: back off; nothing is recorded from it). Messages name the URL's host
and the problem, never a credential or a token.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlsplit

import httpx2 as httpx
from authlib.integrations.httpx_client import OAuth2Client, OAuthError

log = logging.getLogger(__name__)


class RteError(Exception):
    """A failed exchange with the RTE API."""

    retry_after_s: float | None = None


class RteUnavailable(RteError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RteAuthError(RteError):
    pass


class RteProtocolError(RteError):
    pass


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date, or nothing: the connector's own backoff applies
    return seconds if 0 <= seconds <= 3600 else None


class RteClient:
    def __init__(
        self,
        *,
        token_url: str,
        api_url: str,
        client_id: str,
        client_secret: str,
        timeout_s: float = 10.0,
    ) -> None:
        self.token_url = token_url
        self.api_url = api_url
        self.token_fetches = 0
        self._http = OAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint=token_url,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name, not a secret
            grant_type="client_credentials",
            timeout=timeout_s,
            leeway=30,
            update_token=self._token_updated,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RteClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _token_updated(self, *_args, **_kwargs) -> None:  # authlib's refresh-before-expiry hook
        self.token_fetches += 1

    def _token_fetch(self) -> None:
        try:
            self._http.fetch_token(self.token_url, grant_type="client_credentials")
        except OAuthError as exc:
            raise RteAuthError(
                f"{_where(self.token_url)} refused the client credentials: {exc.error}"
            ) from None
        except httpx.HTTPError as exc:
            raise RteUnavailable(
                f"token request to {_where(self.token_url)} failed: {type(exc).__name__}"
            ) from None
        except ValueError:  # not JSON, e.g. an HTML 502 page from a proxy
            raise RteUnavailable(f"{_where(self.token_url)} answered something that is not a token") from None
        if not self._http.token or not self._http.token.get("access_token"):
            raise RteProtocolError(f"{_where(self.token_url)} answered without an access_token")
        self.token_fetches += 1

    def _get(self, params: dict[str, str]) -> httpx.Response:
        if not self._http.token:
            self._token_fetch()
        try:
            return self._http.get(self.api_url, params=params)
        except OAuthError as exc:  # the refresh-before-expiry fetch failed
            raise RteAuthError(
                f"{_where(self.token_url)} refused the client credentials: {exc.error}"
            ) from None
        except httpx.HTTPError as exc:
            raise RteUnavailable(f"request to {_where(self.api_url)} failed: {type(exc).__name__}") from None

    def activations(self, start: datetime, end: datetime) -> list:
        """The raw items published in ``[start, end)``; items are checked by the caller, one by one."""
        params = {"start_date": start.isoformat(), "end_date": end.isoformat()}
        response = self._get(params)
        if response.status_code == 401:
            log.info(
                "RTE API: token refused (%s); fetching a new one",
                response.headers.get("WWW-Authenticate", ""),
            )
            self._http.token = None
            response = self._get(params)
            if response.status_code == 401:
                raise RteAuthError(f"{_where(self.api_url)} refused a freshly issued token (401)")
        if response.status_code == 429 or response.status_code >= 500:
            raise RteUnavailable(
                f"{_where(self.api_url)} answered {response.status_code}",
                retry_after_s=_retry_after(response),
            )
        if response.status_code != 200:
            raise RteProtocolError(
                f"{_where(self.api_url)} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            body = response.json()
        except ValueError:
            raise RteProtocolError(
                f"{_where(self.api_url)} answered 200 with a body that is not JSON"
            ) from None
        items = body.get("activations") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise RteProtocolError(f"{_where(self.api_url)} answered 200 without an 'activations' list")
        return items
