from django.apps import AppConfig


class DispatchConfig(AppConfig):
    """Signals, allocation, per-vehicle commands, acks, fallback and the dispatch log."""

    name = "dispatch"
