"""Small views of the console outside the admin site."""

from __future__ import annotations

from django.http import HttpResponseRedirect
from django.templatetags.static import static


def favicon(request):
    """Browsers ask every site for /favicon.ico: answer with the console's icon, not a 404."""
    response = HttpResponseRedirect(static("console/favicon.svg"))
    response["Cache-Control"] = "max-age=86400"
    return response
