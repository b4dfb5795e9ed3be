from django.apps import AppConfig


class V2GProjectConfig(AppConfig):
    """Project-level app: holds the platform's own management commands."""

    name = "v2g_project"
    verbose_name = "v2g platform"
