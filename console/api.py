"""``GET /api/dashboard/summary``: what the operator console's dashboard draws,
for the caller's fleets (fleet/access.py), in one request."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from console import selectors
from console.serializers import DashboardSummarySerializer
from fleet import access
from v2g_project.openapi import VALIDATION_ERROR

MAX_HOURS = 48
DEFAULT_HOURS = 6


class DashboardSummaryView(APIView):
    @extend_schema(
        operation_id="dashboard_summary",
        summary="The operator dashboard's figures",
        description=(
            "For the caller's fleets (or the one named by `fleet_id`): average requested and "
            "acknowledged power per bucket over the last `hours` (+ = to the grid); per signal type, the "
            "ack rate and publish-to-ack latency of the commands of that window; active vehicles online, "
            "plugged in and dispatched now; today's approved plan against its delivery per slot; CO2 "
            "avoided per local day of this week. 400 naming the parameter for a bad value, 403 for a "
            "fleet outside the caller's."
        ),
        parameters=[
            OpenApiParameter(
                "hours",
                OpenApiTypes.INT,
                description=f"The window, 1 to {MAX_HOURS} hours (default {DEFAULT_HOURS}).",
            ),
            OpenApiParameter(
                "fleet_id", OpenApiTypes.STR, description="Only this fleet (one of the caller's)."
            ),
        ],
        responses={200: DashboardSummarySerializer, 400: VALIDATION_ERROR},
    )
    def get(self, request):
        raw = request.query_params.get("hours")
        hours = DEFAULT_HOURS
        if raw is not None:
            if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_HOURS:
                raise ValidationError({"hours": [f"must be a whole number of hours from 1 to {MAX_HOURS}"]})
            hours = int(raw)
        fleet_ids = access.visible_fleet_ids(request)
        fleet_id = request.query_params.get("fleet_id")
        if fleet_id is not None:
            if "\x00" in fleet_id:
                raise ValidationError({"fleet_id": ["must not contain a NUL character"]})
            access.require_fleet(request, fleet_id)
            fleet_ids = frozenset({fleet_id})
        summary = selectors.dashboard_summary(fleet_ids, hours=hours)
        return Response(DashboardSummarySerializer(summary).data)
