"""``GET /api/vehicles/{id}/kpis?start=&end=`` (SPEC §11): a vehicle's daily
KPIs and their totals. Fleet-scoped: another fleet's vehicle is a 404."""

from __future__ import annotations

import datetime as dt

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet import access
from fleet.models import Vehicle
from kpis import selectors, services
from kpis.serializers import VehicleKpisSerializer
from v2g_project.openapi import NOT_FOUND, VALIDATION_ERROR

MAX_DAYS = 366
DEFAULT_DAYS = 7


def parse_day(params, name: str) -> dt.date | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            return dt.date.fromisoformat(raw)
    except ValueError:
        pass
    raise ValidationError({name: [f"not a date: {raw[:40]!r}; expected YYYY-MM-DD"]})


class VehicleKpisView(APIView):
    @extend_schema(
        operation_id="vehicles_kpis_retrieve",
        summary="A vehicle's daily KPIs",
        description=(
            "Per local day (scheduler.time_zone) of `start`..`end` (inclusive, at most 366 days; default "
            "the last 7 days to today): energy injected to and consumed from the grid (kWh), CO2 avoided "
            "(g) and the energy ratio injected / consumed (null when nothing was consumed), from the "
            "acknowledged dispatch commands; then the totals. Days without energy have no row. 400 "
            "naming the parameter for a bad date or range, 404 for a vehicle unknown or of another fleet."
        ),
        parameters=[
            OpenApiParameter("id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The vehicle's id."),
            OpenApiParameter(
                "start", OpenApiTypes.DATE, description="First local day, YYYY-MM-DD (default: end - 6 days)."
            ),
            OpenApiParameter(
                "end", OpenApiTypes.DATE, description="Last local day, YYYY-MM-DD (default: today)."
            ),
        ],
        responses={200: VehicleKpisSerializer, 400: VALIDATION_ERROR, 404: NOT_FOUND},
    )
    def get(self, request, id: str):
        params = request.query_params
        start, end = parse_day(params, "start"), parse_day(params, "end")
        if end is None:
            end = max(services.local_today(), start or dt.date.min)
        if start is None:
            start = end - dt.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ValidationError({"start": [f"start {start} is after end {end}"]})
        if (end - start).days + 1 > MAX_DAYS:
            raise ValidationError({"end": [f"the range {start}..{end} is over {MAX_DAYS} days"]})
        if not access.scope(Vehicle.objects.filter(id=id), request).exists():
            raise NotFound(f"no vehicle {id[:64]!r}")
        return Response(VehicleKpisSerializer(selectors.vehicle_kpis(id, start, end)).data)
