from django.contrib import admin

from telemetry.models import VehicleState


@admin.register(VehicleState)
class VehicleStateAdmin(admin.ModelAdmin):
    list_display = ("vehicle", "soc", "plugged_in", "power_kw", "online", "reported_at", "received_at")
    list_filter = ("plugged_in", "online", "vehicle__fleet")
    search_fields = ("vehicle__id",)
    list_select_related = ("vehicle",)
