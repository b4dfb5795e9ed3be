"""Day-ahead plans over HTTP (SPEC §11): ``GET /api/plans/{date}/`` (JSON),
``GET /api/plans/{date}.csv`` and ``GET /api/plans/{date}/delivery``.

A plan is visible to a token of its fleet; a plan for every fleet (the
default) to callers that see every fleet, as signals for every fleet are.
"""

from __future__ import annotations

import datetime as dt
import re

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet import access
from scheduler import exports, selectors
from scheduler.models import Plan
from scheduler.serializers import PlanDeliverySerializer, PlanSerializer

DATE_PARAMETER = OpenApiParameter(
    "date",
    OpenApiTypes.DATE,
    OpenApiParameter.PATH,
    description="The delivery day, a local date of the scheduler's time zone (YYYY-MM-DD).",
)
VERSION_PARAMETER = OpenApiParameter(
    "version",
    {"type": "integer", "minimum": 1},
    description="This version of the day's plan, whatever its status (default: the approved one).",
)
CSV_TYPE = "text/csv; charset=utf-8"
DIGITS = re.compile(r"[0-9]{1,10}")
CSV_EXAMPLE = (
    "vehicle_id,timeslot,power_kw\n"
    "ev-0001,2025-10-26T02:00:00+02:00,7.400\n"
    "ev-0002,2025-10-26T02:00:00+02:00,-3.250\n"
    "ev-0001,2025-10-26T02:00:00+01:00,7.400\n"
)


class JsonErrors(BaseContentNegotiation):
    """The bodies are JSON or CSV whatever ``Accept`` says, and errors are JSON:
    no 406 for a client that asks for text/csv."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class PlanView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonErrors

    def plan(self, request, date: str) -> Plan:
        try:
            day = dt.date.fromisoformat(date) if len(date) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise ValidationError({"date": [f"not a date: {date[:40]!r}; expected YYYY-MM-DD"]})
        raw = request.query_params.get("version")
        version = None
        if raw is not None:
            version = int(raw) if DIGITS.fullmatch(raw) else 0
            if not 1 <= version <= 2**31 - 1:
                raise ValidationError({"version": [f"a version number from 1, not {raw[:40]!r}"]})
        plans = access.scope(Plan.objects.select_related("decided_by"), request)
        plan = selectors.plan_for_day(plans, day, version)
        if plan is None:
            what = f"version {version} of the plan" if version else "approved plan"
            raise NotFound(f"no {what} for {day.isoformat()}")
        return plan


class PlanJsonView(PlanView):
    @extend_schema(
        operation_id="plans_retrieve",
        summary="A day's plan (JSON)",
        description=(
            "The approved day-ahead NEBEF plan of a delivery day (or `?version=N`): its metadata, the "
            "target, planned and shortfall power per slot with `planned_mw`, the RTE-facing aggregate "
            "in MW, and every vehicle's entry (`vehicle_id`, `timeslot`, `power_kw`; positive = to "
            "the grid). A delivery day is a local day: 96 quarter-hours, 92 or 100 when the clocks "
            "change. 404 when the day has no approved plan (or no such version) visible to the caller."
        ),
        parameters=[DATE_PARAMETER, VERSION_PARAMETER],
        responses={200: PlanSerializer},
    )
    def get(self, request, date: str):
        plan = self.plan(request, date)
        return StreamingHttpResponse(exports.plan_json_chunks(plan), content_type="application/json")


class PlanCsvView(PlanView):
    @extend_schema(
        operation_id="plans_csv_retrieve",
        summary="A day's plan (CSV)",
        description=(
            "The same plan as the JSON, one line per entry: the header line "
            "`vehicle_id,timeslot,power_kw`, then entries in slot order and vehicle id order; "
            "`timeslot` is the slot start in ISO 8601 with the local offset, `power_kw` has three "
            "decimals (positive = to the grid); `\\n` line ends. Errors are JSON."
        ),
        parameters=[DATE_PARAMETER, VERSION_PARAMETER],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The plan's entries.",
                examples=[OpenApiExample("Autumn day", value=CSV_EXAMPLE, media_type="text/csv")],
            )
        },
    )
    def get(self, request, date: str):
        plan = self.plan(request, date)
        response = StreamingHttpResponse(
            exports.plan_csv_chunks(plan), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'inline; filename="{exports.export_filename(plan, "csv")}"'
        return response


class PlanDeliveryView(PlanView):
    @extend_schema(
        operation_id="plans_delivery_retrieve",
        summary="Delivery against plan",
        description=(
            "Per slot of the day's approved plan (or `?version=N`): the planned power, and for each "
            "executed slot the power requested from the fleet (its NEBEF signal), allocated to "
            "vehicles and acknowledged by them over every dispatch round, with the outcome."
        ),
        parameters=[DATE_PARAMETER, VERSION_PARAMETER],
        responses={200: PlanDeliverySerializer},
    )
    def get(self, request, date: str):
        return Response(selectors.plan_delivery(self.plan(request, date)))
