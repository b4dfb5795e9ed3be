from django.contrib import admin

from dispatch.models import (
    Command,
    Dispatch,
    DispatchLogEntry,
    FlexibilitySignal,
    GeneratorState,
    RteActivation,
    RteConnectorState,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class DispatchInline(admin.TabularInline):
    model = Dispatch
    extra = 0
    fields = ("round", "strategy", "target_kw", "allocated_kw", "acknowledged_kw", "status", "finished_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(FlexibilitySignal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "signal_type", "power_kw", "start_at", "duration_s", "source", "fleet")
    list_filter = ("signal_type", "source", "fleet")
    date_hierarchy = "created_at"
    inlines = [DispatchInline]


class CommandInline(admin.TabularInline):
    model = Command
    extra = 0
    fields = ("vehicle", "power_kw", "allocated_kw", "status", "attempts", "latency_s", "reason")
    readonly_fields = fields
    can_delete = False
    max_num = 0


@admin.register(Dispatch)
class DispatchAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "signal",
        "round",
        "strategy",
        "target_kw",
        "allocated_kw",
        "acknowledged_kw",
        "status",
    )
    list_filter = ("status", "round", "signal__signal_type")
    list_select_related = ("signal",)
    date_hierarchy = "created_at"
    inlines = [CommandInline]


@admin.register(DispatchLogEntry)
class DispatchLogAdmin(ReadOnlyAdmin):
    list_display = (
        "at",
        "signal_type",
        "vehicle_id",
        "allocated_kw",
        "status",
        "ack_latency_s",
        "fallback_round",
    )
    list_filter = ("signal_type", "status", "fallback_round")
    search_fields = ("vehicle_id", "dispatch_id")
    date_hierarchy = "at"


@admin.register(RteActivation)
class RteActivationAdmin(ReadOnlyAdmin):
    """Every activation received from RTE, what became of it and why."""

    list_display = ("received_at", "activation_id", "status", "signal", "reason")
    list_filter = ("status",)
    search_fields = ("activation_id",)
    date_hierarchy = "received_at"
    readonly_fields = ("activation_id", "payload", "status", "reason", "signal", "received_at", "handled_at")


@admin.register(RteConnectorState)
class RteConnectorStateAdmin(ReadOnlyAdmin):
    list_display = ("api_url", "polled_until", "last_success_at", "consecutive_failures", "last_error")


@admin.register(GeneratorState)
class GeneratorStateAdmin(ReadOnlyAdmin):
    list_display = ("key", "started_at", "planned", "planned_until")
