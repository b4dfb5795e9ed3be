"""The console's additions to the other apps' admin screens: what needs
several apps at once (a vehicle list with its telemetry, signals submitted for
selected vehicles or a fleet), operators' fleet access on the user page, the
admin log, and periodic tasks reserved to all-fleet operators."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import F
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from console.forms import SignalForm
from dispatch import services as dispatch_services
from dispatch.models import SignalSource
from fleet.admin import FleetAdmin, VehicleAdmin
from fleet.admin_scope import fleet_ids
from fleet.models import Fleet, OperatorAccess, Vehicle

# --- submitting a signal from the admin ---------------------------------------------------


def signal_submit_page(model_admin, request, queryset, *, fleet_id, vehicle_ids, target: str):
    """The intermediate page of the "submit a signal" actions: the form, then
    ``signal_submit`` (source ``admin``), logged, and on to the new dispatch."""
    form = SignalForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        data = form.cleaned_data
        try:
            signal, dispatch = dispatch_services.signal_submit(
                signal_type=data["signal_type"],
                power_kw=data["power_kw"],
                duration_s=data["duration_s"],
                source=SignalSource.ADMIN,
                fleet_id=fleet_id,
                vehicle_ids=vehicle_ids,
            )
        except dispatch_services.SignalRejected as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            model_admin.log_addition(request, signal, f"Submitted from the admin for {target}")
            model_admin.message_user(
                request,
                f"Signal {signal} submitted for {target}; its dispatch is below (reload to follow the acks).",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:dispatch_dispatch_change", args=[dispatch.id]))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Submit a signal for {target}",
        "form": form,
        "target": target,
        "objects": queryset[:50],
        "count": queryset.count(),
        "opts": model_admin.model._meta,
        "action": request.POST.get("action"),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/console/signal_submit.html", context)


class SignalActionMixin:
    def has_signal_permission(self, request) -> bool:
        return request.user.has_perm("dispatch.add_flexibilitysignal")


# --- vehicles: telemetry columns, availability, signals ------------------------------------


class AvailabilityFilter(admin.SimpleListFilter):
    """As dispatch sees vehicles: available = plugged in, online and heard from
    within telemetry.stale_after_seconds."""

    title = "availability"
    parameter_name = "availability"

    def lookups(self, request, model_admin):
        return (
            ("available", "available (plugged in, online, fresh)"),
            ("unplugged", "online, unplugged"),
            ("stale", "not heard from recently"),
            ("offline", "offline (Last Will)"),
            ("unknown", "no telemetry yet"),
        )

    def queryset(self, request, queryset):
        fresh = timezone.now() - timedelta(seconds=settings.V2G.telemetry.stale_after_seconds)
        value = self.value()
        if value == "available":
            return queryset.filter(state__plugged_in=True, state__online=True, state__received_at__gte=fresh)
        if value == "unplugged":
            return queryset.filter(state__plugged_in=False, state__online=True, state__received_at__gte=fresh)
        if value == "stale":
            return queryset.filter(state__online=True, state__received_at__lt=fresh)
        if value == "offline":
            return queryset.filter(state__online=False)
        if value == "unknown":
            return queryset.filter(state__isnull=True)
        return queryset


admin.site.unregister(Vehicle)


@admin.register(Vehicle)
class ConsoleVehicleAdmin(SignalActionMixin, VehicleAdmin):
    list_display = (
        "id",
        "fleet",
        "site",
        "cluster",
        "is_v2g",
        "soc_pct",
        "plugged",
        "last_seen",
        "max_discharge_kw",
        "max_charge_kw",
        "min_soc",
        "active",
    )
    list_filter = (
        "active",
        "is_v2g",
        AvailabilityFilter,
        ("fleet", admin.RelatedOnlyFieldListFilter),
        ("site", admin.RelatedOnlyFieldListFilter),
        "cluster",
        "segment",
    )
    actions = ("activate", "deactivate", "submit_signal")

    def get_queryset(self, request):
        # The telemetry columns in the same query as the vehicles: no query per row.
        return (
            super()
            .get_queryset(request)
            .annotate(_soc=F("state__soc"), _plugged=F("state__plugged_in"), _seen=F("state__received_at"))
        )

    @admin.display(description="SoC", ordering="_soc")
    def soc_pct(self, vehicle: Vehicle) -> str:
        return "-" if vehicle._soc is None else f"{vehicle._soc * 100:.0f} %"

    @admin.display(description="plugged in", boolean=True, ordering="_plugged")
    def plugged(self, vehicle: Vehicle) -> bool | None:
        return vehicle._plugged

    @admin.display(description="last seen", ordering="_seen")
    def last_seen(self, vehicle: Vehicle):
        return vehicle._seen or "-"

    @admin.action(description="Submit a signal to the selected vehicles only", permissions=["signal"])
    def submit_signal(self, request, queryset):
        fleets = sorted(set(queryset.values_list("fleet_id", flat=True)))
        if len(fleets) > 1 and fleet_ids(request) is not None:
            self.message_user(request, "Select vehicles of one fleet at a time.", messages.ERROR)
            return None
        vehicle_ids = sorted(queryset.values_list("id", flat=True))
        return signal_submit_page(
            self,
            request,
            queryset,
            fleet_id=fleets[0] if len(fleets) == 1 else None,
            vehicle_ids=vehicle_ids,
            target=f"{len(vehicle_ids)} selected vehicle(s)",
        )


admin.site.unregister(Fleet)


@admin.register(Fleet)
class ConsoleFleetAdmin(SignalActionMixin, FleetAdmin):
    actions = ("submit_signal",)

    @admin.action(description="Submit a signal to the selected fleet", permissions=["signal"])
    def submit_signal(self, request, queryset):
        fleets = list(queryset.values_list("id", flat=True))
        if len(fleets) != 1:
            self.message_user(request, "Select exactly one fleet.", messages.ERROR)
            return None
        return signal_submit_page(
            self, request, queryset, fleet_id=fleets[0], vehicle_ids=None, target=f"fleet {fleets[0]}"
        )


# --- users: which fleets each operator may see --------------------------------------------


class OperatorAccessInline(admin.StackedInline):
    model = OperatorAccess
    can_delete = False
    filter_horizontal = ("fleets",)
    verbose_name_plural = "fleet access (operators see only these fleets; superusers see every fleet)"

    def _may_grant(self, request) -> bool:
        # Granting fleets is for users who see every fleet: nobody widens their own scope.
        return fleet_ids(request) is None

    def has_add_permission(self, request, obj=None):
        return self._may_grant(request) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._may_grant(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may_grant(request) and super().has_delete_permission(request, obj)


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ConsoleUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, OperatorAccessInline]
    list_display = (*UserAdmin.list_display, "fleets")
    list_filter = (*UserAdmin.list_filter, "fleet_access__all_fleets")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("fleet_access")
            .prefetch_related("fleet_access__fleets")
        )

    @admin.display(description="fleets")
    def fleets(self, user) -> str:
        if user.is_superuser:
            return "all (superuser)"
        access = getattr(user, "fleet_access", None)
        if access is None:
            return "none"
        return "all" if access.all_fleets else ", ".join(f.id for f in access.fleets.all()) or "none"

    def has_change_permission(self, request, obj=None):
        return fleet_ids(request) is None and super().has_change_permission(request, obj)

    def has_add_permission(self, request):
        return fleet_ids(request) is None and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return fleet_ids(request) is None and super().has_delete_permission(request, obj)


# --- the admin log --------------------------------------------------------------------------


@admin.register(LogEntry)
class LogEntryAdmin(admin.ModelAdmin):
    """Every change and action made in the console: who, what, when. Read-only.
    An operator limited to some fleets sees its own entries only."""

    list_display = ("action_time", "user", "action", "content_type", "object_link", "change_message")
    list_filter = (("action_time", admin.DateFieldListFilter), "action_flag", "content_type", "user")
    search_fields = ("object_repr", "change_message", "user__username")
    list_select_related = ("user", "content_type")
    date_hierarchy = "action_time"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if fleet_ids(request) is None else queryset.filter(user=request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="action", ordering="action_flag")
    def action(self, entry: LogEntry) -> str:
        return {1: "added", 2: "changed", 3: "deleted"}.get(entry.action_flag, str(entry.action_flag))

    @admin.display(description="object")
    def object_link(self, entry: LogEntry) -> str:
        url = entry.get_admin_url() if entry.object_id else ""
        return format_html('<a href="{}">{}</a>', url, entry.object_repr) if url else entry.object_repr


# --- periodic tasks (django-celery-beat): global jobs, all-fleet operators only -----------


def _logged(func, description: str):
    def action(model_admin, request, queryset):
        objects = list(queryset)
        model_admin.log_bulk_action(request, objects, f"Action: {description}")
        return func(model_admin, request, queryset)

    return action


class AllFleetsOnlyMixin:
    """Jobs of every fleet: an operator limited to some fleets may look, not change;
    every action is recorded in the admin log."""

    def _all_fleets(self, request) -> bool:
        return fleet_ids(request) is None

    def has_add_permission(self, request, *args):
        return self._all_fleets(request) and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return self._all_fleets(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._all_fleets(request) and super().has_delete_permission(request, obj)

    def get_actions(self, request):
        if not self._all_fleets(request):
            return {}
        return {
            name: (
                func if name == "delete_selected" else _logged(func, str(description)),
                action,
                description,
            )
            for name, (func, action, description) in super().get_actions(request).items()
        }

    def log_bulk_action(self, request, objects, message: str) -> None:
        if objects:
            LogEntry.objects.log_actions(request.user.pk, objects, 2, change_message=message)


for model, base in (
    (PeriodicTask, beat_admin.PeriodicTaskAdmin),
    (IntervalSchedule, beat_admin.IntervalScheduleAdmin),
    (CrontabSchedule, beat_admin.CrontabScheduleAdmin),
    (SolarSchedule, beat_admin.SolarScheduleAdmin),
    (ClockedSchedule, beat_admin.ClockedScheduleAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, type(base.__name__, (AllFleetsOnlyMixin, base), {}))
