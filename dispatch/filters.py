"""Query parameters of the dispatch log endpoint (django-filter).

A malformed value is a 400 naming the parameter (DjangoFilterBackend raises
the form's errors); parameters not declared here are ignored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import django_filters
from django import forms

from dispatch.models import DispatchLogEntry, SignalType

# An unencoded "+" in a query string is read as a space: "...T08:00:00 01:00"
# can only have meant "+01:00", so it is taken as such.
_SPACED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")


class AwareDateTimeField(forms.Field):
    """An ISO 8601 date-time with its UTC offset (``Z`` or ``+01:00``); a naive
    one is refused, not guessed to be UTC or server time."""

    # Messages take the value as a parameter: django-filter %-formats them.
    def to_python(self, value):
        if value in self.empty_values:
            return None
        quoted = {"value": repr(str(value)[:60])}
        text = _SPACED_OFFSET.sub(r"\1+\2", str(value).strip())
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise forms.ValidationError(
                "not an ISO 8601 date-time: %(value)s (e.g. 2026-03-01T08:00:00+01:00, "
                "or ...Z for UTC; write + as %%2B in a URL)",
                code="invalid",
                params=quoted,
            ) from None
        if parsed.tzinfo is None:
            raise forms.ValidationError(
                "no UTC offset in %(value)s: add Z (UTC) or one like +01:00 (%%2B01:00 in a URL)",
                code="naive",
                params=quoted,
            )
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("out of range: %(value)s", code="range", params=quoted) from None


class AwareDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = AwareDateTimeField


class DispatchLogFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start is not None and end is not None and start > end:
            self.add_error(
                "start",
                forms.ValidationError(
                    "start (%(start)s) is after end (%(end)s), both in UTC",
                    code="order",
                    params={"start": start.isoformat(), "end": end.isoformat()},
                ),
            )
        return cleaned


class DispatchLogFilter(django_filters.FilterSet):
    start = AwareDateTimeFilter(
        field_name="at",
        lookup_expr="gte",
        help_text="Entries at or after this time; ISO 8601 with offset (e.g. 2026-03-01T00:00:00Z).",
    )
    end = AwareDateTimeFilter(
        field_name="at",
        lookup_expr="lt",
        help_text="Entries before this time (exclusive); ISO 8601 with offset; not before start.",
    )
    vehicle_id = django_filters.CharFilter(
        max_length=DispatchLogEntry._meta.get_field("vehicle_id").max_length,
        help_text="One vehicle's entries (an unknown vehicle gives an empty list).",
    )
    signal_type = django_filters.ChoiceFilter(
        choices=SignalType.choices,
        help_text="One signal type's entries.",
        error_messages={
            "invalid_choice": f"unknown signal_type %(value)s: one of {', '.join(SignalType.values)}"
        },
    )
    dispatch_id = django_filters.UUIDFilter(help_text="One dispatch round's entries (its UUID).")

    class Meta:
        model = DispatchLogEntry
        fields: list[str] = []
        form = DispatchLogFilterForm
