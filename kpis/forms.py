"""The admin's KPI backfill form."""

from __future__ import annotations

import datetime as dt

from django import forms

MAX_BACKFILL_DAYS = 366


class KpiBackfillForm(forms.Form):
    """A range of local days whose KPIs a worker recomputes."""

    start = forms.DateField(
        help_text="First local day, YYYY-MM-DD.", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        help_text="Last local day (inclusive).", widget=forms.DateInput(attrs={"type": "date"})
    )
    fleet = forms.ChoiceField(required=False, help_text="Empty: every fleet.")

    def __init__(
        self, *args, fleet_choices: list[tuple[str, str]], fleet_required: bool, today: dt.date, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.today = today
        self.fields["fleet"].choices = ([] if fleet_required else [("", "every fleet")]) + fleet_choices
        self.fields["fleet"].required = fleet_required
        if fleet_required:
            self.fields["fleet"].help_text = "One of your fleets."

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end:
            if start > end:
                self.add_error("start", f"{start} is after the end, {end}.")
            elif (end - start).days + 1 > MAX_BACKFILL_DAYS:
                self.add_error("end", f"At most {MAX_BACKFILL_DAYS} days at once.")
            if end > self.today:
                self.add_error("end", f"{end} is after today ({self.today}): nothing happened yet.")
        return data
