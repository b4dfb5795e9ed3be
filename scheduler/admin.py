"""Operator screens for day-ahead plans: the versions of each day, their
approval, exports, and delivery against plan."""

from __future__ import annotations

from collections import Counter

from django.contrib import admin, messages
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from fleet.admin_scope import FleetScopedAdmin
from scheduler import exports, selectors, services
from scheduler.models import Plan, PlanEntry, PlanStatus

EXCLUDED_SHOWN = 50


@admin.register(Plan)
class PlanAdmin(FleetScopedAdmin):
    # A plan for every fleet (no fleet) is seen by all-fleet operators only, as in the API.
    list_display = (
        "day",
        "version",
        "status",
        "scope",
        "target_kwh",
        "planned_kwh",
        "shortfall_kwh",
        "vehicle_count",
        "entry_count",
        "solver_status",
        "source",
        "created_at",
        "decided_by",
        "decided_at",
    )
    list_display_links = ("day", "version")
    list_filter = ("status", "source", ("fleet", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("fleet", "decided_by")
    date_hierarchy = "day"
    ordering = ("-day", "-version")
    actions = ("approve", "reject", "export_csv", "export_json")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("day", "version", "status"),
                    ("scope", "source", "created_at"),
                    ("decided_by", "decided_at"),
                    "decision_note",
                    "downloads",
                )
            },
        ),
        (
            "Totals",
            {
                "fields": (
                    ("target_kwh", "planned_kwh", "shortfall_kwh"),
                    ("vehicle_count", "entry_count", "entries_link"),
                    ("time_zone", "slot_minutes", "slot_count"),
                )
            },
        ),
        (
            "Solver",
            {"fields": (("solver_status", "objective", "gap", "solve_s"), "inputs_digest", "notes")},
        ),
        ("Vehicles left out", {"fields": ("left_out",), "classes": ("collapse",)}),
        ("Per slot: plan and delivery", {"fields": ("slot_table",)}),
    )
    readonly_fields = (
        *("day", "version", "status", "scope", "source", "created_at", "decided_by", "decided_at"),
        *("decision_note", "downloads", "target_kwh", "planned_kwh", "shortfall_kwh", "vehicle_count"),
        *("entry_count", "entries_link", "time_zone", "slot_minutes", "slot_count", "solver_status"),
        *("objective", "gap", "solve_s", "inputs_digest", "notes", "left_out", "slot_table"),
    )

    # Plans are made by runs (Beat, plan_day) and decided by actions, never edited.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a plan is a record of what was planned, notified and executed

    def has_decide_permission(self, request):
        return request.user.has_perm("scheduler.change_plan")

    @admin.display(description="fleet", ordering="fleet")
    def scope(self, plan: Plan) -> str:
        return plan.fleet_id or "all fleets"

    @admin.display(description="approval")
    def decision_note(self, plan: Plan) -> str:
        if plan.status == PlanStatus.DRAFT:
            return (
                "A draft: approve or reject it with the actions of the plan list. Approving it makes it "
                "the day's notified plan (exported, executed slot by slot) and supersedes the version "
                "approved before, if any."
            )
        if plan.status == PlanStatus.APPROVED:
            return "The day's notified plan: exported by the API and executed at each slot start."
        if plan.status == PlanStatus.SUPERSEDED:
            return "Was approved until another version of the day was; slots it executed stay executed."
        return "Rejected: never executed or exported as the notified plan."

    @admin.display(description="export")
    def downloads(self, plan: Plan) -> str:
        csv_url = reverse("admin:scheduler_plan_export", args=[plan.pk, "csv"])
        json_url = reverse("admin:scheduler_plan_export", args=[plan.pk, "json"])
        return format_html('<a href="{}">CSV</a> · <a href="{}">JSON</a>', csv_url, json_url)

    @admin.display(description="entries")
    def entries_link(self, plan: Plan) -> str:
        url = reverse("admin:scheduler_planentry_changelist") + "?" + urlencode({"plan__id__exact": plan.pk})
        return format_html('<a href="{}">browse the {} entries</a>', url, plan.entry_count)

    @admin.display(description="planner notes")
    def notes(self, plan: Plan) -> str:
        if not plan.messages:
            return "-"
        shown = plan.messages[:EXCLUDED_SHOWN]
        more = len(plan.messages) - len(shown)
        return format_html(
            "<ul>{}</ul>{}",
            format_html_join("", "<li>{}</li>", ((m,) for m in shown)),
            f"... and {more} more" if more else "",
        )

    @admin.display(description="left out")
    def left_out(self, plan: Plan) -> str:
        if not plan.excluded:
            return "-"
        reasons = Counter(plan.excluded.values())
        examples = sorted(plan.excluded.items())[:EXCLUDED_SHOWN]
        return format_html(
            "<p>{}</p><ul>{}</ul>{}",
            "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common()),
            format_html_join("", "<li>{}: {}</li>", examples),
            f"... and {len(plan.excluded) - len(examples)} more"
            if len(plan.excluded) > len(examples)
            else "",
        )

    @admin.display(description="slots")
    def slot_table(self, plan: Plan) -> str:
        """One row per slot (at most 100): the plan, then what the fleet was asked
        and acknowledged when the slot was executed; entries are on their own pages."""
        delivery = {row["slot"]: row for row in selectors.plan_delivery(plan)["slots"]}

        def kw(value) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows = (
            (
                row["slot"],
                row["timeslot"],
                kw(row["target_kw"]),
                kw(row["planned_kw"]),
                kw(row["shortfall_kw"]),
                row["vehicles"],
                kw(delivery[row["slot"]]["requested_kw"]),
                kw(delivery[row["slot"]]["acknowledged_kw"]),
                delivery[row["slot"]]["status"],
            )
            for row in selectors.plan_slots(plan)
        )
        return format_html(
            "<table><thead><tr><th>slot</th><th>start (local)</th><th>target kW</th><th>planned kW</th>"
            "<th>shortfall kW</th><th>vehicles</th><th>requested kW</th><th>acknowledged kW</th>"
            "<th>delivery</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td>{}</td><td>{}</td></tr>",
                rows,
            ),
        )

    # --- actions -------------------------------------------------------------------------

    @admin.action(
        description="Approve the selected draft (supersedes the day's approved version)",
        permissions=["decide"],
    )
    def approve(self, request, queryset):
        days = Counter(queryset.values_list("day", flat=True))
        for plan in queryset.order_by("day", "version"):
            if days[plan.day] > 1:
                self.message_user(
                    request,
                    f"{plan}: select one version of {plan.day} to approve, not several.",
                    messages.ERROR,
                )
                continue
            try:
                approved, previous = services.plan_approve(plan.pk, user=request.user)
            except services.PlanStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            note = f"; version {previous.version} is superseded" if previous else ""
            self.message_user(
                request, f"{approved.day} version {approved.version} approved{note}.", messages.SUCCESS
            )

    @admin.action(description="Reject the selected drafts", permissions=["decide"])
    def reject(self, request, queryset):
        for plan in queryset.order_by("day", "version"):
            try:
                rejected = services.plan_reject(plan.pk, user=request.user)
            except services.PlanStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request, f"{rejected.day} version {rejected.version} rejected.", messages.SUCCESS
            )

    def _export(self, request, queryset, extension: str):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one plan to export.", messages.ERROR)
            return None
        plan = queryset.get()
        self.log_change(request, plan, f"Exported as {extension.upper()}")
        return self._download(plan, extension)

    @admin.action(description="Export the selected plan as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return self._export(request, queryset, "csv")

    @admin.action(description="Export the selected plan as JSON", permissions=["view"])
    def export_json(self, request, queryset):
        return self._export(request, queryset, "json")

    # --- downloads -----------------------------------------------------------------------

    def get_urls(self):
        export = self.admin_site.admin_view(self.export_view)
        return [
            path("<uuid:plan_id>/export.<str:extension>", export, name="scheduler_plan_export"),
            *super().get_urls(),
        ]

    def export_view(self, request, plan_id, extension: str):
        if not self.has_view_permission(request):
            raise Http404
        plan = self.get_queryset(request).filter(pk=plan_id).first()  # another fleet's: 404
        if plan is None or extension not in ("csv", "json"):
            raise Http404
        self.log_change(request, plan, f"Exported as {extension.upper()}")
        return self._download(plan, extension)

    @staticmethod
    def _download(plan: Plan, extension: str) -> HttpResponse:
        if extension == "csv":
            response = StreamingHttpResponse(exports.plan_csv_chunks(plan), content_type="text/csv")
        else:
            response = StreamingHttpResponse(exports.plan_json_chunks(plan), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{exports.export_filename(plan, extension)}"'
        return response


@admin.register(PlanEntry)
class PlanEntryAdmin(FleetScopedAdmin):
    """A plan's entries, a page at a time (open them from a plan's page)."""

    fleet_field = "plan__fleet_id"
    list_display = ("plan", "slot", "timeslot", "vehicle_id", "power_kw")
    list_select_related = ("plan",)
    search_fields = ("vehicle_id",)
    list_per_page = 200
    show_full_result_count = False  # a day of 10,000 vehicles is up to a million entries

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
