"""Operator screens of dispatch: signals, their rounds with each vehicle's
command (status, latency, fallback round), the dispatch log, RTE activations.
Everything is scoped to the operator's fleets (fleet/admin_scope.py) and
read-only: signals are submitted by the vehicles' and fleets' action (console
app) and the API; the one action here re-runs fallback for a dispatch."""

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from dispatch import services
from dispatch.models import (
    Command,
    CommandStatus,
    Dispatch,
    DispatchLogEntry,
    FlexibilitySignal,
    GeneratorState,
    RteActivation,
    RteConnectorState,
)
from fleet.admin_scope import FleetScopedAdmin


class ReadOnlyAdmin(FleetScopedAdmin):
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
    list_display = (
        "created_at",
        "signal_type",
        "power_kw",
        "start_at",
        "duration_s",
        "source",
        "fleet",
        "selection",
    )
    list_filter = ("signal_type", "source", ("fleet", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("fleet",)
    search_fields = ("=id", "external_id")
    date_hierarchy = "created_at"
    inlines = [DispatchInline]

    @admin.display(description="vehicles")
    def selection(self, signal: FlexibilitySignal) -> str:
        if signal.vehicle_ids is None:
            return "any eligible"
        return f"{len(signal.vehicle_ids)} selected"


class CommandInline(admin.TabularInline):
    model = Command
    extra = 0
    fields = (
        "vehicle",
        "power_kw",
        "allocated_kw",
        "status",
        "attempts",
        "latency_ms",
        "fallback_round",
        "reason",
    )
    readonly_fields = fields
    can_delete = False
    max_num = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("dispatch")

    @admin.display(description="latency (ms)")
    def latency_ms(self, command: Command) -> str:
        return "-" if command.latency_s is None else f"{command.latency_s * 1000:.0f}"

    @admin.display(description="fallback round")
    def fallback_round(self, command: Command) -> int:
        return command.dispatch.round


@admin.register(Dispatch)
class DispatchAdmin(ReadOnlyAdmin):
    fleet_field = "signal__fleet_id"
    list_display = (
        "created_at",
        "signal",
        "round",
        "strategy",
        "target_kw",
        "allocated_kw",
        "acknowledged_kw",
        "acks",
        "status",
    )
    list_filter = ("status", "round", "signal__signal_type", "signal__source")
    list_select_related = ("signal",)
    search_fields = ("=id", "=signal__id")
    date_hierarchy = "created_at"
    inlines = [CommandInline]
    actions = ("rerun_fallback",)
    readonly_fields = ("log_link",)

    def get_queryset(self, request):
        # Correlated subqueries, not a JOIN ... GROUP BY: computed for the rows of
        # the page only, however many commands the table holds.
        def count(**filters):
            commands = Command.objects.filter(dispatch=OuterRef("pk"), **filters).order_by()
            return Subquery(commands.values("dispatch").annotate(n=Count("id")).values("n"))

        return (
            super()
            .get_queryset(request)
            .annotate(_commands=count(), _acked=count(status=CommandStatus.ACKED))
        )

    @admin.display(description="acks")
    def acks(self, dispatch: Dispatch) -> str:
        return f"{dispatch._acked or 0}/{dispatch._commands or 0}"

    @admin.display(description="dispatch log")
    def log_link(self, dispatch: Dispatch) -> str:
        url = (
            reverse("admin:dispatch_dispatchlogentry_changelist")
            + "?"
            + urlencode({"dispatch_id": dispatch.id})
        )
        return format_html('<a href="{}">this round in the dispatch log</a>', url)

    def has_fallback_permission(self, request) -> bool:
        return request.user.has_perm("dispatch.add_dispatch")

    @admin.action(
        description="Re-run fallback: re-dispatch the power still not acknowledged", permissions=["fallback"]
    )
    def rerun_fallback(self, request, queryset):
        for signal_id in sorted({d.signal_id for d in queryset}):
            dispatch = queryset.filter(signal_id=signal_id).order_by("-round").first()
            try:
                fallback = services.dispatch_fallback_rerun(dispatch.id)
            except services.DispatchStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            message = (
                f"Fallback round {fallback.round} re-run from the admin for {fallback.target_kw:+.3f} kW"
            )
            self.log_addition(request, fallback, message)
            self.log_change(request, dispatch, message)
            self.message_user(
                request,
                f"Signal {fallback.signal}: fallback round {fallback.round} opened for "
                f"{fallback.target_kw:+.3f} kW.",
                messages.SUCCESS,
            )


@admin.register(DispatchLogEntry)
class DispatchLogAdmin(ReadOnlyAdmin):
    """The dispatch log, read-only: filter by date, signal type, status, round;
    search by vehicle id (exact) or dispatch id."""

    fleet_field = None
    vehicle_field = "vehicle_id"
    list_display = (
        "at",
        "signal_type",
        "vehicle_id",
        "setpoint_kw",
        "allocated_kw",
        "status",
        "ack_latency_s",
        "fallback_round",
        "dispatch_id",
    )
    list_filter = (("at", admin.DateFieldListFilter), "signal_type", "status", "fallback_round")
    search_fields = ("=vehicle_id", "=dispatch_id", "=signal_id")
    date_hierarchy = "at"
    show_full_result_count = False  # a million records: no COUNT(*) of them all

    def has_delete_permission(self, request, obj=None):
        return False  # a record of what was decided


@admin.register(RteActivation)
class RteActivationAdmin(ReadOnlyAdmin):
    """Every activation received from RTE, what became of it and why."""

    fleet_field = "signal__fleet_id"
    list_display = ("received_at", "activation_id", "status", "signal", "reason")
    list_filter = ("status",)
    search_fields = ("activation_id",)
    date_hierarchy = "received_at"
    readonly_fields = ("activation_id", "payload", "status", "reason", "signal", "received_at", "handled_at")


@admin.register(RteConnectorState)
class RteConnectorStateAdmin(ReadOnlyAdmin):
    fleet_field = None  # the connector serves every fleet
    list_display = ("api_url", "polled_until", "last_success_at", "consecutive_failures", "last_error")


@admin.register(GeneratorState)
class GeneratorStateAdmin(ReadOnlyAdmin):
    fleet_field = None
    list_display = ("key", "started_at", "planned", "planned_until")
