from django.apps import AppConfig


class FleetConfig(AppConfig):
    """The registry of fleets, sites and vehicles every other app depends on."""

    name = "fleet"
