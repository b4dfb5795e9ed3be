"""Which fleets an API caller may see: the one place that decides.

Every API view goes through these helpers, so a token scoped to some fleets
never sees another fleet's fleets, vehicles, states, signals, dispatches or
logs, in list views as in detail views. Views still to come (KPIs, plans)
use them the same way:

    vehicles = access.scope(Vehicle.objects.all(), request)           # by fleet id
    entries = access.scope_by_vehicle(DispatchLogEntry.objects.all(), request)  # by vehicle id
    access.require_fleet(request, request.query_params.get("fleet_id"))     # a fleet named: 403

The rules, the same on every endpoint:

- a request that itself names a fleet outside the caller's scope (``?fleet_id=``,
  a body's ``fleet`` or ``fleet_id``) is refused with 403;
- a detail object of another fleet is a 404, as if it did not exist, so that
  ids of other fleets are not disclosed (scope the queryset, then look up);
- something that concerns every fleet (a signal without ``fleet_id``, a new
  fleet) needs all-fleet access.

Callers: an API token (``request.auth`` is a :class:`Grant`) sees its fleets,
or every fleet when issued for all; a staff user logged in with a session
(operators, the browsable API, the admin's dashboard) sees the fleets of its
:class:`~fleet.models.OperatorAccess` (a superuser: every fleet; a user
without one: none). The operator console (the Django admin) scopes every
screen and action with the same rule, through :func:`user_fleet_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from fleet.models import OperatorAccess, Vehicle


@dataclass(frozen=True)
class Grant:
    """What an authenticated token may do; ``request.auth`` of a token request."""

    name: str
    fleet_ids: frozenset[str] | None  # None: every fleet
    throttle_key: str
    token_id: int | None = None  # None: the static token of the configuration


_USER_CACHE = "_v2g_fleet_ids"


def user_fleet_ids(user) -> frozenset[str] | None:
    """The ids of the fleets a logged-in user (an operator of the console) may
    see, or None for every fleet: a superuser sees every fleet; another user
    what its :class:`OperatorAccess` grants, and nothing without one. Cached on
    the user object, i.e. for one request."""
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return None
    if not hasattr(user, _USER_CACHE):
        access = OperatorAccess.objects.filter(user_id=user.pk).first()
        if access is None:
            fleet_ids = frozenset()
        elif access.all_fleets:
            fleet_ids = None
        else:
            fleet_ids = frozenset(access.fleets.values_list("id", flat=True))
        setattr(user, _USER_CACHE, fleet_ids)
    return getattr(user, _USER_CACHE)


def visible_fleet_ids(request: Request) -> frozenset[str] | None:
    """The ids of the fleets the caller may see, or None for every fleet."""
    if isinstance(request.auth, Grant):
        return request.auth.fleet_ids
    user = request.user
    if user is not None and user.is_authenticated and user.is_staff:
        return user_fleet_ids(user)
    return frozenset()  # not reached behind IsAuthenticated; nothing, to be safe


def filter_fleets(
    queryset: QuerySet, fleet_ids: frozenset[str] | None, fleet_field: str = "fleet_id"
) -> QuerySet:
    """The rows of ``queryset`` whose ``fleet_field`` is one of ``fleet_ids``
    (None: every row). Rows with no fleet are kept for None only."""
    if fleet_ids is None:
        return queryset
    return queryset.filter(**{f"{fleet_field}__in": fleet_ids})


def filter_by_vehicle(
    queryset: QuerySet, fleet_ids: frozenset[str] | None, vehicle_field: str = "vehicle_id"
) -> QuerySet:
    """The rows of ``queryset`` whose ``vehicle_field`` (a vehicle id) is a
    vehicle of one of ``fleet_ids`` (None: every row)."""
    if fleet_ids is None:
        return queryset
    vehicles = Vehicle.objects.filter(fleet_id__in=fleet_ids).values("id")
    return queryset.filter(**{f"{vehicle_field}__in": vehicles})


def scope(queryset: QuerySet, request: Request, fleet_field: str = "fleet_id") -> QuerySet:
    """The rows of ``queryset`` whose ``fleet_field`` (a lookup to a fleet id,
    e.g. ``"vehicle__fleet_id"``) the caller may see. Rows with no fleet (a
    signal for every fleet) are visible to all-fleet callers only."""
    return filter_fleets(queryset, visible_fleet_ids(request), fleet_field)


def scope_by_vehicle(queryset: QuerySet, request: Request, vehicle_field: str = "vehicle_id") -> QuerySet:
    """The rows of ``queryset`` about a vehicle (``vehicle_field`` holds its id,
    as in the dispatch log or KPIs) of a fleet the caller may see. Rows of a
    vehicle no longer in the registry are visible to all-fleet callers only."""
    return filter_by_vehicle(queryset, visible_fleet_ids(request), vehicle_field)


def visible(queryset: QuerySet, request: Request, fleet_field: str = "fleet_id") -> bool:
    """Whether a detail object (``queryset`` selects it) exists for the caller;
    no query for all-fleet callers, who see whatever exists."""
    if visible_fleet_ids(request) is None:
        return True
    return scope(queryset, request, fleet_field).exists()


def _caller(request: Request) -> str:
    return "this token" if isinstance(request.auth, Grant) else "this user"


def require_fleet(request: Request, fleet_id: str | None, what: str = "fleet_id") -> None:
    """403 unless the caller may act on ``fleet_id``; None means every fleet."""
    fleet_ids = visible_fleet_ids(request)
    if fleet_ids is None:
        return
    if fleet_id is None:
        raise PermissionDenied(f"{what}: {_caller(request)} is limited to some fleets; name one of them")
    if fleet_id not in fleet_ids:
        raise PermissionDenied(f"{what}: fleet {str(fleet_id)[:64]!r} is outside {_caller(request)}'s fleets")


def require_all_fleets(request: Request, action: str) -> None:
    """403 unless the caller sees every fleet (e.g. to create a fleet)."""
    if visible_fleet_ids(request) is not None:
        what = "a token" if isinstance(request.auth, Grant) else "access"
        raise PermissionDenied(f"{action} needs {what} for all fleets")
