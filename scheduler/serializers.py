"""The shapes of the plan endpoints, for the OpenAPI schema. The bodies are
written by ``scheduler.exports`` (byte-for-byte stable, streamed) and
``scheduler.selectors.plan_delivery``; these serializers document them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from scheduler.models import PlanStatus

DELIVERY_STATUSES = ("not_executed", "in_progress", "completed", "partial", "failed", "no_vehicles")


# Explicit enums, each used by one component only: named after it (PlanStatusEnum,
# PlanDeliverySlotStatusEnum) rather than colliding with the API's other "status" enums.
@extend_schema_field({"type": "string", "enum": list(PlanStatus.values)})
class PlanStatusField(serializers.CharField):
    pass


@extend_schema_field({"type": "string", "enum": list(DELIVERY_STATUSES)})
class DeliveryStatusField(serializers.CharField):
    pass


class PlanSolverSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="optimal, or feasible (time limit / fallback plan).")
    objective = serializers.FloatField(allow_null=True)
    gap = serializers.FloatField(allow_null=True, help_text="Relative optimality gap; 0 = proven optimal.")
    solve_s = serializers.FloatField(allow_null=True, help_text="Planner run time, seconds.")


class PlanTotalsSerializer(serializers.Serializer):
    target_kwh = serializers.FloatField()
    planned_kwh = serializers.FloatField()
    shortfall_kwh = serializers.FloatField(help_text="Target energy the fleet cannot deliver.")
    vehicles = serializers.IntegerField(help_text="Vehicles given to the planner.")
    entries = serializers.IntegerField()


class PlanSlotSerializer(serializers.Serializer):
    slot = serializers.IntegerField(help_text="Index in the delivery day, from 0.")
    timeslot = serializers.CharField(help_text="Slot start, ISO 8601 with the local offset.")
    target_kw = serializers.FloatField()
    planned_kw = serializers.FloatField(help_text="Net planned power, kW: the sum of the slot's entries.")
    shortfall_kw = serializers.FloatField(help_text="Target not covered, kW (>= 0).")
    planned_mw = serializers.FloatField(help_text="planned_kw in MW: the RTE-facing aggregate per step.")


class PlanEntrySerializer(serializers.Serializer):
    vehicle_id = serializers.CharField()
    slot = serializers.IntegerField()
    timeslot = serializers.CharField(help_text="Slot start, ISO 8601 with the local offset.")
    power_kw = serializers.FloatField(help_text="Signed, three decimals: + = to the grid, - = charging.")


class PlanSerializer(serializers.Serializer):
    plan_id = serializers.UUIDField()
    day = serializers.DateField(help_text="Delivery day, a local date of time_zone.")
    version = serializers.IntegerField()
    status = PlanStatusField(help_text="draft, approved (the notified plan), rejected or superseded.")
    fleet_id = serializers.CharField(allow_null=True, help_text="The fleet planned; null = every fleet.")
    time_zone = serializers.CharField()
    slot_minutes = serializers.IntegerField()
    slot_count = serializers.IntegerField(help_text="96 quarter-hours; 92 or 100 on daylight-saving days.")
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.CharField(allow_null=True, help_text="User name of the operator who decided.")
    inputs_digest = serializers.CharField(help_text="SHA-256 of the planner input.")
    solver = PlanSolverSerializer()
    messages = serializers.ListField(child=serializers.CharField(), help_text="The planner's notes.")
    totals = PlanTotalsSerializer()
    slots = PlanSlotSerializer(many=True)
    entries = PlanEntrySerializer(many=True, help_text="In slot order, then vehicle id.")


class PlanDeliverySlotSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    timeslot = serializers.CharField()
    planned_kw = serializers.FloatField()
    requested_kw = serializers.FloatField(allow_null=True, help_text="The slot's NEBEF signal; null if none.")
    allocated_kw = serializers.FloatField(allow_null=True, help_text="Sent to vehicles, every round.")
    acknowledged_kw = serializers.FloatField(allow_null=True, help_text="Acknowledged by vehicles.")
    status = DeliveryStatusField(help_text="The slot's outcome; not_executed: no signal (yet).")
    signal_id = serializers.UUIDField(allow_null=True)
    dispatch_id = serializers.UUIDField(allow_null=True, help_text="Follow it at /api/dispatches/{id}/.")


class PlanDeliverySerializer(serializers.Serializer):
    plan_id = serializers.UUIDField()
    day = serializers.DateField()
    version = serializers.IntegerField()
    status = serializers.CharField(help_text="The plan's status, as in the plan itself.")
    executed_slots = serializers.IntegerField()
    planned_kwh = serializers.FloatField(help_text="Over the executed slots.")
    requested_kwh = serializers.FloatField()
    acknowledged_kwh = serializers.FloatField()
    slots = PlanDeliverySlotSerializer(many=True)
