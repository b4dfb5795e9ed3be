from django.contrib import admin

from fleet.admin_scope import FleetScopedAdmin, FleetScopedInline
from telemetry.models import TelemetryPoll, TelemetryPollMiss, VehicleState, VehicleStateHistory


@admin.register(VehicleState)
class VehicleStateAdmin(FleetScopedAdmin):
    fleet_field = "vehicle__fleet_id"
    list_display = ("vehicle", "soc", "plugged_in", "power_kw", "online", "reported_at", "received_at")
    list_filter = ("plugged_in", "online", ("vehicle__fleet", admin.RelatedOnlyFieldListFilter))
    search_fields = ("vehicle__id",)
    list_select_related = ("vehicle",)


@admin.register(VehicleStateHistory)
class VehicleStateHistoryAdmin(FleetScopedAdmin):
    fleet_field = "vehicle__fleet_id"
    list_display = ("vehicle", "reported_at", "soc", "plugged_in", "power_kw", "source", "received_at")
    list_filter = ("source",)
    search_fields = ("=vehicle__id",)  # exact: a prefix scan of a large table is slow
    raw_id_fields = ("vehicle", "poll")
    show_full_result_count = False


class MissInline(FleetScopedInline, admin.TabularInline):
    model = TelemetryPollMiss
    raw_id_fields = ("vehicle",)
    extra = 0
    max_num = 0


@admin.register(TelemetryPoll)
class TelemetryPollAdmin(FleetScopedAdmin):
    fleet_field = None  # a round asks every vehicle: all-fleet operators only
    list_display = ("started_at", "status", "manual", "expected", "answered", "timed_out", "finished_at")
    list_filter = ("status", "manual")
    readonly_fields = [f.name for f in TelemetryPoll._meta.fields]
    inlines = [MissInline]
