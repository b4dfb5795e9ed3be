from django.apps import AppConfig


class KpisConfig(AppConfig):
    """Ecological KPIs per vehicle and day, their backfill and gauges."""

    name = "kpis"
    verbose_name = "KPIs"
