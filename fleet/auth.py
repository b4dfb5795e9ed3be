"""API authentication and throttling (README "API access").

- ``Authorization: Bearer <token>``: an :class:`~fleet.models.ApiToken` issued in
  the admin or by ``api_token_create`` (stored hashed), or the static token of
  the configuration (``api.static_token``, off by default).
- A session of a staff user (operators in the admin, the browsable API).

Anything else is a 401 with ``WWW-Authenticate: Bearer`` and a message naming
the problem (never the token). Token requests are throttled per token at
``api.throttle_rate``; staff sessions are not throttled.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import caches
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.throttling import SimpleRateThrottle

from fleet.access import Grant
from fleet.models import ApiToken

log = logging.getLogger(__name__)

# last_used_at is written at most this often per token: a busy integration
# must not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
THROTTLE_CACHE = "throttle"


class TokenUser(AnonymousUser):
    """``request.user`` of a token request: authenticated, but no Django user,
    so no admin access and no model permissions whatever the token."""

    def __init__(self, grant: Grant) -> None:
        self.grant = grant
        self.username = f"token:{grant.name}"

    def __str__(self) -> str:
        return self.username

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def is_authenticated(self) -> bool:
        return True

    def get_username(self) -> str:
        return self.username


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def grant_for(token: str, now: datetime) -> Grant:
    """The grant of a presented token, or AuthenticationFailed naming why not."""
    api = settings.V2G.api
    static = api.static_token.get_secret_value()
    # Hashes on both sides: a constant-time compare whatever the lengths.
    if static and hmac.compare_digest(_digest(token), _digest(static)):
        return Grant(
            name="static token",
            fleet_ids=frozenset(api.static_token_fleets) or None,
            throttle_key="static",
        )
    prefix = ApiToken.split(token)
    row = ApiToken.objects.filter(prefix=prefix).first() if prefix else None
    if row is None or not hmac.compare_digest(row.key_hash, ApiToken.hash(token)):
        raise AuthenticationFailed("unknown API token")
    if row.revoked_at is not None:
        raise AuthenticationFailed(f"API token revoked at {row.revoked_at.isoformat()}")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed(f"API token expired at {row.expires_at.isoformat()}")
    fleet_ids = None if row.all_fleets else frozenset(row.fleets.values_list("id", flat=True))
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=row.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
    return Grant(name=row.name, fleet_ids=fleet_ids, throttle_key=f"token-{row.prefix}", token_id=row.pk)


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None  # no header, or another scheme: not ours
        token = credentials.strip()
        if not token or any(ch.isspace() for ch in token):
            raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <token>'")
        grant = grant_for(token, timezone.now())
        return TokenUser(grant), grant

    def authenticate_header(self, request) -> str:
        # Also makes DRF answer 401 (not 403) to a request with no credentials.
        return f'{self.keyword} realm="api"'


class StaffSessionAuthentication(SessionAuthentication):
    """A logged-in session, for staff users only (operators); integrators use tokens."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None and not result[0].is_staff:
            raise AuthenticationFailed("a session gives API access to staff users only; use an API token")
        return result


class TokenRateThrottle(SimpleRateThrottle):
    """``api.throttle_rate`` per token (the static token counts as one); 429
    with Retry-After beyond it. Counters live in the ``throttle`` cache, shared
    by every web process when the Celery broker is Redis (see settings)."""

    scope = "api_token"

    @property
    def cache(self):
        return caches[THROTTLE_CACHE]

    def get_rate(self) -> str | None:
        return settings.V2G.api.throttle_rate or None  # empty: no throttling

    def get_cache_key(self, request, view) -> str | None:
        if not isinstance(request.auth, Grant):
            return None  # staff sessions are not throttled
        return self.cache_format % {"scope": self.scope, "ident": request.auth.throttle_key}

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            # Throttling protects the service; an unreachable cache must not take it down.
            log.warning("API throttle cache unavailable, request let through: %s", exc)
            return True
