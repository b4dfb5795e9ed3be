from django.contrib.admin.apps import AdminConfig


class ConsoleAdminConfig(AdminConfig):
    """django.contrib.admin with the console's site (a dashboard page): every
    ``@admin.register`` of the project registers on it."""

    default_site = "console.sites.ConsoleAdminSite"
