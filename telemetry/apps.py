from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """Vehicle state (push and pull), history and the prediction engine."""

    name = "telemetry"
