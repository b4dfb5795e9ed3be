from django.apps import AppConfig


class V2GProjectConfig(AppConfig):
    """Project-level app: the platform's own management commands, and the
    Celery app loaded at start so that @shared_task binds to it."""

    name = "v2g_project"
    verbose_name = "v2g platform"

    def ready(self) -> None:
        from v2g_project import celery  # noqa: F401
