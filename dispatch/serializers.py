from __future__ import annotations

from rest_framework import serializers

from dispatch.log import FIELDS
from dispatch.models import Dispatch, DispatchLogEntry, FlexibilitySignal, SignalType
from dispatch.services import MAX_SIGNAL_DURATION_S


class SignalCreateSerializer(serializers.Serializer):
    signal_type = serializers.ChoiceField(choices=SignalType.choices)
    power_kw = serializers.FloatField(
        help_text="Signed kW: positive = to the grid (discharge), negative = charging."
    )
    duration_s = serializers.FloatField(
        min_value=0.001, max_value=MAX_SIGNAL_DURATION_S, help_text="Seconds, at most a week."
    )
    start_at = serializers.DateTimeField(required=False, help_text="ISO 8601 with offset; default now.")
    valid_until = serializers.DateTimeField(
        required=False, help_text="Setpoints expire then; default start+duration."
    )
    fleet_id = serializers.CharField(required=False, allow_null=True, help_text="Only this fleet's vehicles.")
    external_id = serializers.CharField(required=False, allow_blank=True, max_length=128)


class SignalCreatedSerializer(serializers.Serializer):
    signal_id = serializers.UUIDField()
    dispatch_id = serializers.UUIDField()
    url = serializers.URLField()


class SignalSerializer(serializers.ModelSerializer):
    class Meta:
        model = FlexibilitySignal
        fields = ("id", "signal_type", "power_kw", "start_at", "duration_s", "valid_until", "source", "fleet")


class RoundSerializer(serializers.ModelSerializer):
    dispatch_id = serializers.UUIDField(source="id")
    excluded_vehicles = serializers.SerializerMethodField()

    class Meta:
        model = Dispatch
        fields = (
            "dispatch_id",
            "round",
            "strategy",
            "target_kw",
            "allocated_kw",
            "acknowledged_kw",
            "status",
            "excluded_vehicles",
            "deadline_at",
            "created_at",
            "finished_at",
        )

    def get_excluded_vehicles(self, obj: Dispatch) -> int:
        return len(obj.excluded)


class CommandSerializer(serializers.Serializer):
    command_id = serializers.UUIDField()
    round = serializers.IntegerField()
    vehicle_id = serializers.CharField()
    power_kw = serializers.FloatField()
    allocated_kw = serializers.FloatField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True)
    acked_at = serializers.DateTimeField(allow_null=True)
    latency_s = serializers.FloatField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)


class DispatchDetailSerializer(serializers.Serializer):
    dispatch_id = serializers.UUIDField()
    signal = SignalSerializer()
    status = serializers.CharField()
    requested_kw = serializers.FloatField()
    allocated_kw = serializers.FloatField()
    acknowledged_kw = serializers.FloatField()
    rounds = RoundSerializer(many=True)
    commands = CommandSerializer(many=True)


class WindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class DecisionSerializer(serializers.Serializer):
    signal_type = serializers.CharField()
    target_power = serializers.FloatField(help_text="kW, signed (positive = to the grid).")
    vehicles_selected = serializers.IntegerField()
    timestamp = serializers.DateTimeField()


class VehicleStatusSerializer(serializers.Serializer):
    vehicle_id = serializers.CharField()
    current_status = serializers.ChoiceField(
        choices=["unknown", "offline", "stale", "dispatched", "plugged_in", "unplugged"]
    )
    forecasted_plugin_window = WindowSerializer(allow_null=True)
    forecasted_soc = serializers.DictField(
        child=serializers.FloatField(), help_text='{"t+0m": 0.62, "t+15m": ...}'
    )
    next_dispatch_window = WindowSerializer(allow_null=True)
    last_dispatch_decision = DecisionSerializer(allow_null=True)


class DispatchLogEntrySerializer(serializers.ModelSerializer):
    """One dispatch log record (SPEC §9): the fields of the JSONL backend's lines."""

    class Meta:
        model = DispatchLogEntry
        fields = FIELDS
        extra_kwargs = {
            "at": {
                "help_text": "When the round was final (UTC); all vehicles of a round have the same time."
            },
            "signal_type": {"help_text": "FCR, aFRR, mFRR, MA, NEBEF or EcoWatt."},
            "target_kw": {"help_text": "kW the round asked of the fleet, signed (positive = to the grid)."},
            "command_id": {"help_text": "The command sent to the vehicle; unique per record."},
            "allocated_kw": {"help_text": "kW allocated to this vehicle, signed."},
            "setpoint_kw": {"help_text": "Setpoint sent to the vehicle, kW, signed."},
            "status": {"help_text": "Command outcome: acked, rejected, timed_out or failed."},
            "acknowledged": {"help_text": "The vehicle accepted the setpoint in time."},
            "ack_latency_s": {"help_text": "Publish to ack, seconds; null when there was no ack."},
            "fallback_round": {"help_text": "0 for the first round, then 1, 2... for fallback rounds."},
            "score": {"help_text": "The vehicle's allocation score; null for strategies without one."},
        }
