"""Forms of the console's intermediate action pages."""

from __future__ import annotations

from django import forms

from dispatch.models import SignalType
from dispatch.services import MAX_SIGNAL_DURATION_S


class SignalForm(forms.Form):
    """A flexibility signal: sent through dispatch.services.signal_submit."""

    signal_type = forms.ChoiceField(choices=SignalType.choices, initial=SignalType.FCR)
    power_kw = forms.FloatField(
        label="Power (kW)",
        help_text="Signed: positive = to the grid (discharge), negative = charging.",
    )
    duration_s = forms.FloatField(
        label="Duration (s)", min_value=1, max_value=MAX_SIGNAL_DURATION_S, initial=300
    )
