from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: the admin site with its dashboard, operators' fleet
    access, the auditor and operator groups, and the dashboard's API."""

    name = "console"
    verbose_name = "Operator console"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from console.groups import ensure_groups_after_migrate

        post_migrate.connect(ensure_groups_after_migrate, sender=self)
