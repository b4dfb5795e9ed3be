"""Writes of the fleet app: API tokens (the registry itself is plain model saves)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from fleet.models import ApiToken, Fleet


class TokenRejected(ValueError):
    """A token request that cannot be honoured; the message says why."""


def api_token_create(
    *,
    name: str,
    fleet_ids: Iterable[str] = (),
    all_fleets: bool = False,
    expires_at: datetime | None = None,
    created_by=None,
) -> tuple[ApiToken, str]:
    """Issue a token; returns it and its plaintext, which is stored nowhere."""
    fleet_ids = sorted(set(fleet_ids))
    if not name.strip():
        raise TokenRejected("a token needs a name")
    if all_fleets == bool(fleet_ids):
        raise TokenRejected("a token is for some fleets or for all fleets: give one or the other")
    fleets = list(Fleet.objects.filter(id__in=fleet_ids))
    unknown = sorted(set(fleet_ids) - {f.id for f in fleets})
    if unknown:
        raise TokenRejected(f"no fleet {', '.join(map(repr, unknown))}")
    if expires_at is not None and expires_at <= timezone.now():
        raise TokenRejected("expires_at is already past")
    token = ApiToken(name=name.strip(), all_fleets=all_fleets, expires_at=expires_at, created_by=created_by)
    plaintext = token.new_key()
    with transaction.atomic():
        token.save()
        token.fleets.set(fleets)
    return token, plaintext


def api_token_revoke(*, token_ids: Iterable[int], now: datetime | None = None) -> int:
    """Revoke tokens now (idempotent: an already revoked one keeps its time)."""
    return ApiToken.objects.filter(pk__in=list(token_ids), revoked_at__isnull=True).update(
        revoked_at=now or timezone.now()
    )
