from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import generics, status, viewsets
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.reverse import reverse

from dispatch import selectors, services
from dispatch.filters import DispatchLogFilter
from dispatch.models import Dispatch, DispatchLogEntry, SignalSource
from dispatch.serializers import (
    DispatchDetailSerializer,
    DispatchLogEntrySerializer,
    SignalCreatedSerializer,
    SignalCreateSerializer,
    VehicleStatusSerializer,
)
from fleet import access
from fleet.models import Fleet, Site, Vehicle
from v2g_project.pagination import KeysetPagination

SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


class SignalViewSet(viewsets.ViewSet):
    """Submit a flexibility signal; it is dispatched to the fleet at once."""

    serializer_class = SignalCreateSerializer

    def create(self, request):
        incoming = SignalCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        # Before the fleet is looked up: a scoped token learns nothing of other fleets.
        access.require_fleet(request, incoming.validated_data.get("fleet_id"))
        try:
            signal, dispatch = services.signal_submit(source=SignalSource.API, **incoming.validated_data)
        except services.SignalRejected as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        url = reverse("dispatch-detail", args=[dispatch.id], request=request)
        body = SignalCreatedSerializer({"signal_id": signal.id, "dispatch_id": dispatch.id, "url": url}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": url})


class DispatchViewSet(viewsets.ViewSet):
    """A dispatch: its rounds, commands, and requested / allocated / acknowledged power."""

    serializer_class = DispatchDetailSerializer
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def retrieve(self, request, pk=None):
        try:
            dispatch_id = uuid.UUID(str(pk))
        except ValueError:
            raise NotFound(f"no dispatch {pk}") from None
        # Another fleet's dispatch (or, for a scoped token, one for every fleet) is not found.
        if not access.visible(Dispatch.objects.filter(id=dispatch_id), request, "signal__fleet_id"):
            raise NotFound(f"no dispatch {pk}")
        detail = selectors.dispatch_detail(dispatch_id)
        if detail is None:
            raise NotFound(f"no dispatch {pk}")
        return Response(DispatchDetailSerializer(detail).data)


class VehicleStatusView(generics.GenericAPIView):
    """Each vehicle's current status, forecast plug-in window and SoC, next
    dispatch window and last dispatch decision; ?fleet_id=&site=&cluster=."""

    serializer_class = VehicleStatusSerializer

    def get_queryset(self):
        vehicles = access.scope(Vehicle.objects.active().order_by("id"), self.request)
        params = self.request.query_params
        # An unknown value matches nothing (an empty list); a malformed one is a 400.
        for param, lookup, max_length in (
            ("fleet_id", "fleet_id", Fleet._meta.get_field("id").max_length),
            ("site", "site__name", Site._meta.get_field("name").max_length),
            ("cluster", "cluster", Vehicle._meta.get_field("cluster").max_length),
        ):
            value = params.get(param)
            if value is None:
                continue
            if not value or len(value) > max_length or (param == "fleet_id" and not SLUG.match(value)):
                raise ValidationError({param: [f"not a valid {param}: {value[:80]!r}"]})
            if param == "fleet_id":
                access.require_fleet(self.request, value)
            vehicles = vehicles.filter(**{lookup: value})
        return selectors.status_rows(vehicles)

    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        # Rows are plain JSON types already (the serializer documents them): a
        # serializer pass would triple the time of a 10,000-vehicle page.
        return self.get_paginated_response(selectors.vehicle_statuses(page, timezone.now()))


class DispatchLogPagination(KeysetPagination):
    # Every vehicle of a round is logged with the same time: the id breaks the
    # ties, and the indexes are (..., at, id) to match (migration 0004).
    orderings = {"-at": ("-at", "-id"), "at": ("at", "id")}


class DispatchLogNotQueryable(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "dispatch_log_not_queryable"


class DispatchLogView(generics.ListAPIView):
    """The dispatch log (SPEC §9): one record per vehicle per dispatch round,
    newest first; ?start=&end=&vehicle_id=&signal_type=&dispatch_id=, cursor
    pages (?page_size=, at most 1000, then the ``next`` link), ?ordering=at
    for oldest first. Answers 409 when ``logging.backend`` is ``jsonl``: the
    records then go to a rotated file, not to the database this reads."""

    serializer_class = DispatchLogEntrySerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = DispatchLogFilter
    pagination_class = DispatchLogPagination

    def get_queryset(self):
        # A token sees the records of its fleets' vehicles (by the vehicle's fleet now).
        return access.scope_by_vehicle(DispatchLogEntry.objects.all(), self.request)

    def list(self, request, *args, **kwargs):
        backend = settings.V2G.logging.backend
        if backend != "sqlite":
            raise DispatchLogNotQueryable(
                f"the dispatch log is not queryable here: logging.backend is {backend!r}, so records "
                "are written to the file logging.jsonl_path, not to the database; read that file (one "
                "JSON object per line), or set logging.backend to 'sqlite' to log to the database and "
                "query it here"
            )
        return super().list(request, *args, **kwargs)
