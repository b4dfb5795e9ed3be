from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.utils import timezone
from django.utils.html import format_html

from fleet import services
from fleet.admin_scope import FleetScopedAdmin, FleetScopedInline, fleet_ids
from fleet.models import ApiToken, Fleet, Site, Vehicle


class SiteInline(FleetScopedInline, admin.TabularInline):
    model = Site
    extra = 0
    fields = ("name", "grid_import_limit_kw", "grid_export_limit_kw")


@admin.register(Fleet)
class FleetAdmin(FleetScopedAdmin):
    fleet_field = "id"
    ordering = ("id",)  # Meta.ordering is dropped by the vehicle count's GROUP BY
    list_display = ("id", "name", "active", "vehicle_count", "updated_at")
    list_filter = ("active",)
    search_fields = ("id", "name")
    inlines = [SiteInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_vehicles=Count("vehicles"))

    def has_add_permission(self, request):
        # A new fleet concerns every fleet's operators: all-fleet access only.
        return fleet_ids(request) is None and super().has_add_permission(request)

    @admin.display(description="vehicles", ordering="_vehicles")
    def vehicle_count(self, obj: Fleet) -> int:
        return obj._vehicles


@admin.register(Site)
class SiteAdmin(FleetScopedAdmin):
    list_display = ("name", "fleet", "grid_import_limit_kw", "grid_export_limit_kw")
    list_filter = (("fleet", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("name", "fleet__id")
    list_select_related = ("fleet",)


@admin.register(Vehicle)
class VehicleAdmin(FleetScopedAdmin):
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
    list_filter = (
        "active",
        "is_v2g",
        ("fleet", admin.RelatedOnlyFieldListFilter),
        ("site", admin.RelatedOnlyFieldListFilter),
        "cluster",
        "segment",
    )
    search_fields = ("id",)
    list_select_related = ("fleet", "site")
    list_per_page = 200
    autocomplete_fields = ("fleet", "site")  # scoped: the Fleet and Site admins' querysets
    actions = ("activate", "deactivate")
    fieldsets = (
        (None, {"fields": ("id", "fleet", "site", "cluster", "segment", "active", "priority")}),
        ("Capabilities", {"fields": ("is_v2g", "battery_kwh", "max_charge_kw", "max_discharge_kw")}),
        ("Driver needs", {"fields": ("min_soc", "target_soc", "departure_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # The id is in MQTT topics and logs: fixed once created.
        return ("id",) if obj else ()

    @admin.action(description="Activate selected vehicles", permissions=["change"])
    def activate(self, request, queryset):
        changed = queryset.filter(active=False)
        self.log_bulk(request, changed, "Activated (bulk action)")
        count = changed.update(active=True)
        self.message_user(request, f"{count} vehicle(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected vehicles (excluded from dispatch)", permissions=["change"])
    def deactivate(self, request, queryset):
        changed = queryset.filter(active=True)
        self.log_bulk(request, changed, "Deactivated (bulk action)")
        count = changed.update(active=False)
        self.message_user(request, f"{count} vehicle(s) deactivated.", messages.SUCCESS)


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name", "all_fleets", "fleets", "expires_at")

    limited_to: frozenset[str] | None = None  # set by the admin: the operator's fleets

    def clean(self):
        data = super().clean()
        fleets = data.get("fleets")
        if data.get("all_fleets") and self.limited_to is not None:
            self.add_error("all_fleets", "You may issue tokens for your own fleets only.")
        if data.get("all_fleets") and fleets:
            raise ValidationError("Choose either all fleets or some fleets, not both.")
        if not data.get("all_fleets") and not fleets and "fleets" not in self.errors:
            self.add_error("fleets", "Choose the fleets this token may see, or tick all fleets.")
        expires_at = data.get("expires_at")
        if expires_at is not None and self.instance.pk is None and expires_at <= timezone.now():
            self.add_error("expires_at", "This time is already past.")
        return data


READ_ONLY_TOKEN_FIELDS = ("key", "state", "created_by", "created_at", "last_used_at", "revoked_at")


@admin.register(ApiToken)
class ApiTokenAdmin(FleetScopedAdmin):
    """Issue API tokens (the plaintext is shown once, on creation) and revoke them.
    An operator limited to some fleets sees and issues tokens of those fleets only."""

    form = ApiTokenForm
    list_display = ("name", "key", "scope", "state", "expires_at", "last_used_at", "created_by", "created_at")
    list_filter = ("all_fleets", "fleets", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix")
    filter_horizontal = ("fleets",)
    actions = ("revoke",)

    def get_queryset(self, request):
        queryset = admin.ModelAdmin.get_queryset(self, request)
        ids = fleet_ids(request)
        if ids is not None:
            # Only tokens that see nothing beyond the operator's fleets.
            queryset = queryset.filter(all_fleets=False).exclude(fleets__in=Fleet.objects.exclude(id__in=ids))
        return queryset.select_related("created_by").prefetch_related("fleets")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.limited_to = fleet_ids(request)
        return form

    def get_fields(self, request, obj=None):
        editable = ("name", "all_fleets", "fleets", "expires_at")
        return editable if obj is None else ("key", *editable, *READ_ONLY_TOKEN_FIELDS[1:])

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else READ_ONLY_TOKEN_FIELDS

    def save_model(self, request, obj, form, change):
        plaintext = None
        if not change:
            plaintext = obj.new_key()
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if plaintext:
            # The only time it is shown: only its hash is stored.
            self.message_user(
                request,
                format_html(
                    "API token for “{}”: <code>{}</code> — copy it now, it is not stored and will not be "
                    "shown again. Use it as <code>Authorization: Bearer &lt;token&gt;</code>.",
                    obj.name,
                    plaintext,
                ),
                messages.WARNING,
            )

    @admin.display(description="token")
    def key(self, obj: ApiToken) -> str:
        return f"v2g_{obj.prefix}_…"

    @admin.display(description="fleets")
    def scope(self, obj: ApiToken) -> str:
        return "all fleets" if obj.all_fleets else ", ".join(f.id for f in obj.fleets.all()) or "none"

    @admin.display(description="status")
    def state(self, obj: ApiToken) -> str:
        return obj.status(timezone.now())

    @admin.action(description="Revoke selected API tokens", permissions=["change"])
    def revoke(self, request, queryset):
        self.log_bulk(request, queryset.filter(revoked_at__isnull=True), "Revoked")
        count = services.api_token_revoke(token_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} API token(s) revoked.", messages.SUCCESS)
