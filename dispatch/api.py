from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
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
from v2g_project.openapi import VALIDATION_ERROR, ErrorSerializer
from v2g_project.pagination import KeysetPagination

SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


class SignalViewSet(viewsets.ViewSet):
    """Submit a flexibility signal; it is dispatched to the fleet at once."""

    serializer_class = SignalCreateSerializer
    openapi_links = {
        "create": {
            201: {
                "GetDispatch": {
                    "operationId": "dispatches_retrieve",
                    "parameters": {"id": "$response.body#/dispatch_id"},
                    "description": "Follow the dispatch this signal started.",
                }
            }
        }
    }

    @extend_schema(
        summary="Submit a flexibility signal",
        description=(
            "Stores the signal and its first dispatch round; allocation to vehicles and the MQTT "
            "setpoints follow at once, in the background. Follow the dispatch at `url` (also the "
            "`Location` header). With `external_id`, submitting the same signal again returns the "
            "first submission instead of dispatching twice."
        ),
        request=SignalCreateSerializer,
        responses={201: OpenApiResponse(SignalCreatedSerializer, "Accepted; the dispatch is under way.")},
        examples=[
            OpenApiExample(
                "FCR now",
                summary="20 kW to the grid for 5 minutes, from now, any fleet",
                value={"signal_type": "FCR", "power_kw": 20, "duration_s": 300},
                request_only=True,
            ),
            OpenApiExample(
                "Charge one fleet",
                summary="Absorb 50 kW for an hour with one fleet's vehicles",
                value={"signal_type": "mFRR", "power_kw": -50, "duration_s": 3600, "fleet_id": "paris-vans"},
                request_only=True,
            ),
        ],
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                description="The dispatch's URL, as `url` in the body.",
                response=[201],
            )
        ],
    )
    def create(self, request, format=None):  # format: the router's .json suffix
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

    @extend_schema(
        summary="Follow a dispatch",
        description=(
            "The signal, each allocation round (the first, then re-dispatches of missing power), each "
            "vehicle's command (power, status, ack latency), and the requested, allocated and "
            "acknowledged power."
        ),
        parameters=[
            OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The dispatch id.")
        ],
        responses={200: DispatchDetailSerializer},
    )
    def retrieve(self, request, pk=None, format=None):  # format: the router's .json suffix
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

    @extend_schema(
        operation_id="vehicles_status_list",
        summary="Vehicle status and forecasts",
        description=(
            "Per active vehicle: its current status, the forecast plug-in window and state of charge "
            "(now and 15, 30, 60, 120, 240 minutes ahead), the next dispatch window and the last "
            "dispatch decision it took part in. An unknown filter value gives an empty list, a "
            "malformed one a 400 naming the parameter."
        ),
        parameters=[
            OpenApiParameter(
                "fleet_id",
                {"type": "string", "minLength": 1, "maxLength": Fleet._meta.get_field("id").max_length},
                pattern=SLUG.pattern,
                description="Only this fleet's vehicles.",
            ),
            OpenApiParameter(
                "site",
                {"type": "string", "minLength": 1, "maxLength": Site._meta.get_field("name").max_length},
                description="Only vehicles at the site of this name.",
            ),
            OpenApiParameter(
                "cluster",
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": Vehicle._meta.get_field("cluster").max_length,
                },
                description="Only vehicles of this cluster.",
            ),
        ],
        responses={200: VehicleStatusSerializer(many=True), 400: VALIDATION_ERROR},
    )
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


@extend_schema_view(
    get=extend_schema(
        summary="The dispatch log",
        responses={
            200: DispatchLogEntrySerializer(many=True),
            409: OpenApiResponse(
                ErrorSerializer, "`logging.backend` is `jsonl`: the log is a file, not queryable here."
            ),
        },
    )
)
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
