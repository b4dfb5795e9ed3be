"""Per-fleet scoping of the operator console (the Django admin), by the rule
of fleet/access.py: an operator sees and acts on the fleets of its
OperatorAccess only (a superuser on every fleet).

Every fleet-owned ModelAdmin mixes :class:`FleetScopedAdmin` in and names how
its rows reach a fleet: ``fleet_field`` (a lookup to the fleet id, e.g.
``"signal__fleet_id"``), or ``vehicle_field`` (a plain vehicle id, as in the
dispatch log), or neither (``fleet_field = None``: rows that concern every
fleet, such as telemetry polls, seen by all-fleet operators only). Because the
changelist, the change and delete views, actions and autocomplete all start
from ``get_queryset``, an object of another fleet is one that does not exist
(the admin redirects to its index saying so). Choices of fleets, sites and
vehicles in forms are scoped too.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType

from fleet import access
from fleet.models import Fleet, Site, Vehicle


def fleet_ids(request) -> frozenset[str] | None:
    """The fleets the console user of ``request`` may see; None: every fleet."""
    return access.user_fleet_ids(request.user)


def scoped_choices(model, ids: frozenset[str] | None):
    """The rows of Fleet, Site or Vehicle a user with ``ids`` may choose, else None."""
    if model is Fleet:
        return access.filter_fleets(Fleet.objects.all(), ids, "id")
    if model is Site:
        return access.filter_fleets(Site.objects.select_related("fleet"), ids)
    if model is Vehicle:
        return access.filter_fleets(Vehicle.objects.all(), ids)
    return None


class FleetScopedAdmin(admin.ModelAdmin):
    fleet_field: str | None = "fleet_id"
    vehicle_field: str | None = None

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        ids = fleet_ids(request)
        if ids is None:
            return queryset
        if self.vehicle_field:
            return access.filter_by_vehicle(queryset, ids, self.vehicle_field)
        if self.fleet_field is None:
            return queryset.none()
        return access.filter_fleets(queryset, ids, self.fleet_field)

    def _every_fleet_only(self, request) -> bool:
        """Rows that concern every fleet, and a user limited to some fleets."""
        return self.fleet_field is None and not self.vehicle_field and fleet_ids(request) is not None

    def has_view_permission(self, request, obj=None):
        # Not even listed in the menu for operators who would only ever see an empty list.
        return not self._every_fleet_only(request) and super().has_view_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        choices = scoped_choices(db_field.related_model, fleet_ids(request))
        if choices is not None:
            kwargs["queryset"] = choices
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        choices = scoped_choices(db_field.related_model, fleet_ids(request))
        if choices is not None:
            kwargs["queryset"] = choices
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def log_bulk(self, request, queryset, message: str) -> None:
        """One admin log line (LogEntry) per object, all with ``message``: who, what, when."""
        objects = list(queryset)
        if objects:
            LogEntry.objects.log_actions(request.user.pk, objects, CHANGE, change_message=message)

    @staticmethod
    def log_about(request, model, what: str, message: str) -> None:
        """An admin log line about no single object (e.g. a KPI backfill of a range)."""
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(model),
            object_id=None,
            object_repr=what[:200],
            action_flag=CHANGE,
            change_message=message,
        )


class FleetScopedInline:
    """For inlines of fleet-owned objects: scoped choices in their forms."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        choices = scoped_choices(db_field.related_model, fleet_ids(request))
        if choices is not None:
            kwargs["queryset"] = choices
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
