from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    """Day-ahead NEBEF planning, plan approval and export."""

    name = "scheduler"
