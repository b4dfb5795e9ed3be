from collections.abc import Mapping

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets

from fleet import access
from fleet.models import Fleet, Vehicle
from fleet.serializers import FleetSerializer, VehicleSerializer

FLEET_ID = OpenApiParameter(
    "id", str, OpenApiParameter.PATH, description="The fleet's id, e.g. `paris-vans`."
)
VEHICLE_ID = OpenApiParameter(
    "id", str, OpenApiParameter.PATH, description="The vehicle's id (as in its topics)."
)


@extend_schema_view(
    list=extend_schema(summary="List fleets"),
    create=extend_schema(summary="Create a fleet", description="The id is stable: it is in logs and plans."),
    retrieve=extend_schema(summary="A fleet", parameters=[FLEET_ID]),
    partial_update=extend_schema(
        summary="Update a fleet",
        parameters=[FLEET_ID],
        description="Rename it or (de)activate it; its id cannot change (ignored here).",
    ),
)
class FleetViewSet(viewsets.ModelViewSet):
    """Fleets of the registry."""

    # Only for the model's sake (the schema's path parameter): rows come from get_queryset, scoped.
    queryset = Fleet.objects.none()
    serializer_class = FleetSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return access.scope(Fleet.objects.all(), self.request, "id")

    def create(self, request, *args, **kwargs):
        access.require_all_fleets(request, "creating a fleet")
        return super().create(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(
        summary="List vehicles",
        description="Vehicles of the registry, by id; each filter narrows the list (exact match).",
        parameters=[
            OpenApiParameter("fleet_id", str, description="Only this fleet's vehicles."),
            OpenApiParameter("site", str, description="Only vehicles at the site of this name."),
            OpenApiParameter("cluster", str, description="Only vehicles of this cluster."),
            OpenApiParameter("segment", str, description="Only vehicles of this dispatch segment."),
        ],
    ),
    create=extend_schema(
        summary="Register a vehicle",
        description="`site` names a site of the vehicle's fleet. The id is in MQTT topics: it cannot change.",
    ),
    retrieve=extend_schema(summary="A vehicle", parameters=[VEHICLE_ID]),
    partial_update=extend_schema(
        summary="Update a vehicle",
        parameters=[VEHICLE_ID],
        description="Any field but the id (in topics and logs, it cannot change; ignored here).",
    ),
    destroy=extend_schema(
        summary="Remove a vehicle",
        parameters=[VEHICLE_ID],
        description="Its state and commands go with it; the dispatch log keeps its records (by vehicle id).",
    ),
)
class VehicleViewSet(viewsets.ModelViewSet):
    """Vehicles of the registry; filter with ?fleet_id=&site=&cluster=&segment=."""

    queryset = Vehicle.objects.none()  # as above: rows come from get_queryset, scoped
    serializer_class = VehicleSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    lookup_value_regex = "[^/]+"  # ids may hold dots ("car.1"), which DRF's default [^/.]+ cuts off

    def get_queryset(self):
        queryset = access.scope(Vehicle.objects.select_related("fleet", "site"), self.request)
        params = self.request.query_params
        if params.get("fleet_id"):
            access.require_fleet(self.request, params["fleet_id"])
        for param, lookup in (
            ("fleet_id", "fleet_id"),
            ("site", "site__name"),
            ("cluster", "cluster"),
            ("segment", "segment"),
        ):
            if params.get(param):
                queryset = queryset.filter(**{lookup: params[param]})
        return queryset

    def get_serializer(self, *args, **kwargs):
        serializer = super().get_serializer(*args, **kwargs)
        if "fleet" in getattr(serializer, "fields", {}):
            # Whatever the input's form, a vehicle only goes to a fleet in scope.
            serializer.fields["fleet"].queryset = access.scope(Fleet.objects.all(), self.request, "id")
        return serializer

    def create(self, request, *args, **kwargs):
        self._check_fleet(request)
        return super().create(request, *args, **kwargs)

    def partial_update(self, request, *args, **kwargs):
        self._check_fleet(request)
        return super().partial_update(request, *args, **kwargs)

    @staticmethod
    def _check_fleet(request) -> None:
        """403 for a fleet outside the caller's scope, before it is looked up
        (a 400 "no such fleet" would tell other fleets' ids)."""
        fleet = request.data.get("fleet") if isinstance(request.data, Mapping) else None
        if fleet is not None and not isinstance(fleet, dict | list):
            access.require_fleet(request, str(fleet), "fleet")
