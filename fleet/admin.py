from django.contrib import admin, messages
from django.db.models import Count

from fleet.models import Fleet, Site, Vehicle


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0
    fields = ("name", "grid_import_limit_kw", "grid_export_limit_kw")


@admin.register(Fleet)
class FleetAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "active", "vehicle_count", "updated_at")
    list_filter = ("active",)
    search_fields = ("id", "name")
    inlines = [SiteInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_vehicles=Count("vehicles"))

    @admin.display(description="vehicles", ordering="_vehicles")
    def vehicle_count(self, obj: Fleet) -> int:
        return obj._vehicles


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "fleet", "grid_import_limit_kw", "grid_export_limit_kw")
    list_filter = ("fleet",)
    search_fields = ("name", "fleet__id")
    list_select_related = ("fleet",)


@admin.register(Vehicle)
class VehicleAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "fleet",
        "site",
        "cluster",
        "segment",
        "is_v2g",
        "battery_kwh",
        "max_charge_kw",
        "max_discharge_kw",
        "min_soc",
        "target_soc",
        "priority",
        "active",
    )
    list_filter = ("active", "is_v2g", "fleet", "site", "cluster", "segment")
    search_fields = ("id",)
    list_select_related = ("fleet", "site")
    list_per_page = 200
    actions = ("activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("id", "fleet", "site", "cluster", "segment", "active", "priority")}),
        ("Capabilities", {"fields": ("is_v2g", "battery_kwh", "max_charge_kw", "max_discharge_kw")}),
        ("Driver needs", {"fields": ("min_soc", "target_soc", "departure_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The id is in MQTT topics and logs: fixed once created.
        return ("id",) if obj else ()

    @admin.action(description="Activate selected vehicles")
    def activate(self, request, queryset):
        count = queryset.update(active=True)
        self.message_user(request, f"{count} vehicle(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected vehicles (excluded from dispatch)")
    def deactivate(self, request, queryset):
        count = queryset.update(active=False)
        self.message_user(request, f"{count} vehicle(s) deactivated.", messages.SUCCESS)
