from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: the admin site with its dashboard, operators' fleet
    access, the auditor and operator groups, and the dashboard's API."""

    name = "console"
    verbose_name = "Operator console"
