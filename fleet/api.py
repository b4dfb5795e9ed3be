from rest_framework import viewsets

from fleet.models import Fleet, Vehicle
from fleet.serializers import FleetSerializer, VehicleSerializer


class FleetViewSet(viewsets.ModelViewSet):
    """Fleets of the registry."""

    queryset = Fleet.objects.all()
    serializer_class = FleetSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]


class VehicleViewSet(viewsets.ModelViewSet):
    """Vehicles of the registry; filter with ?fleet_id=&site=&cluster=&segment=."""

    serializer_class = VehicleSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        queryset = Vehicle.objects.select_related("fleet", "site")
        params = self.request.query_params
        for param, lookup in (
            ("fleet_id", "fleet_id"),
            ("site", "site__name"),
            ("cluster", "cluster"),
            ("segment", "segment"),
        ):
            if params.get(param):
                queryset = queryset.filter(**{lookup: params[param]})
        return queryset
