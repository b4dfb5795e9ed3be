"""The shape of GET /api/dashboard/summary (documentation; the view returns plain data)."""

from __future__ import annotations

from rest_framework import serializers


class DashboardWindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="Start of the first bucket (UTC).")
    end = serializers.DateTimeField(help_text="End of the last bucket (UTC), just after now.")
    hours = serializers.IntegerField(help_text="The window asked for, hours.")
    bucket_s = serializers.IntegerField(help_text="Bucket length, seconds.")


class DashboardPowerPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="Bucket start (UTC).")
    requested_kw = serializers.FloatField(
        help_text="Average power the signals requested over the bucket, kW (+ = to the grid)."
    )
    acknowledged_kw = serializers.FloatField(
        help_text="Average power the vehicles acknowledged over the bucket, kW (every round)."
    )


class DashboardSignalTypeAckSerializer(serializers.Serializer):
    signal_type = serializers.CharField()
    commands = serializers.IntegerField(help_text="Commands of the rounds started in the window.")
    acked = serializers.IntegerField()
    open = serializers.IntegerField(help_text="Still pending or published (no answer yet).")
    ack_rate = serializers.FloatField(
        allow_null=True, help_text="Acked / settled commands, 0-1; null when none is settled."
    )
    latency_avg_ms = serializers.FloatField(allow_null=True, help_text="Publish-to-ack latency, mean, ms.")
    latency_max_ms = serializers.FloatField(allow_null=True, help_text="Publish-to-ack latency, max, ms.")


class DashboardVehicleCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Active vehicles.")
    online = serializers.IntegerField(
        help_text="Heard from within telemetry.stale_after_seconds, no Last Will."
    )
    plugged_in = serializers.IntegerField(help_text="Online and plugged in.")
    dispatched = serializers.IntegerField(help_text="With a setpoint in force now.")


class DashboardPlanSlotSerializer(serializers.Serializer):
    timeslot = serializers.CharField(help_text="Slot start, ISO 8601 with the local offset.")
    planned_kw = serializers.FloatField()
    requested_kw = serializers.FloatField(allow_null=True, help_text="Null: the slot was not executed.")
    acknowledged_kw = serializers.FloatField(allow_null=True)
    status = serializers.CharField(
        help_text="not_executed, in_progress, completed, partial, failed, no_vehicles."
    )


class DashboardPlanTodaySerializer(serializers.Serializer):
    plan_id = serializers.UUIDField()
    day = serializers.DateField()
    version = serializers.IntegerField()
    fleet_id = serializers.CharField(allow_null=True, help_text="Null: a plan for every fleet.")
    slots = DashboardPlanSlotSerializer(many=True)


class DashboardCo2DaySerializer(serializers.Serializer):
    day = serializers.DateField()
    co2_avoided_g = serializers.FloatField()
    injected_kwh = serializers.FloatField()


class DashboardCo2WeekSerializer(serializers.Serializer):
    week_start = serializers.DateField(help_text="Monday of this local week.")
    days = DashboardCo2DaySerializer(many=True, help_text="Monday to today.")
    co2_avoided_g = serializers.FloatField(help_text="Total of the week so far, grams.")
    injected_kwh = serializers.FloatField()


class DashboardSummarySerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    fleets = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text="The fleets counted; null: every fleet."
    )
    window = DashboardWindowSerializer()
    power = DashboardPowerPointSerializer(
        many=True, help_text="Requested vs acknowledged power, oldest bucket first."
    )
    signal_types = DashboardSignalTypeAckSerializer(
        many=True, help_text="Signal types with commands in the window."
    )
    vehicles = DashboardVehicleCountsSerializer()
    plan = DashboardPlanTodaySerializer(
        allow_null=True, help_text="Today's approved plan and its delivery; null: none."
    )
    co2 = DashboardCo2WeekSerializer()
