"""``python manage.py telemetry_discover``: ask every vehicle to announce itself."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from telemetry import services
from v2g_project import mqtt


class Command(BaseCommand):
    help = (
        "Broadcast a discovery request. The MQTT bridge records the answers: known vehicles' "
        "state is refreshed; unknown ones are registered when telemetry.auto_register is on."
    )

    def handle(self, *args, **options):
        try:
            request_id = services.discovery_broadcast()
        except mqtt.MqttUnavailable as exc:
            raise CommandError(str(exc)) from None
        finally:
            mqtt.publisher_close()
        self.stdout.write(f"discovery {request_id} sent on {settings.V2G.telemetry.discovery_topic}")
