"""Pieces every REST endpoint shares: strict limit/offset pagination, a JSON
404 for unknown URLs under /api/, and the refusal of NUL characters (SPEC §14:
a bad parameter is a 400 naming it; an API client never parses an HTML page).

NUL: PostgreSQL text cannot hold U+0000, so a NUL reaching a query (a filter,
a lookup by id, a related object by name) fails there as a 500. No valid value
of this API contains one, so it is refused at the edge, for every endpoint:
in the URL path (404, as no object has such an id), in a query parameter or
anywhere in a request body (400 naming it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.views import defaults
from rest_framework import pagination, parsers
from rest_framework.exceptions import NotFound, ParseError, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation

API_PREFIX = "/api/"
DIGITS = re.compile(r"[0-9]{1,19}")  # not int()'s "+5", " 5", "1_0" or non-ASCII digits
MAX_OFFSET = 2**63 - 1  # a database's OFFSET is a signed 64-bit integer


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """DRF's limit/offset pagination, but a malformed or out-of-range ``limit``
    or ``offset`` is a 400 naming it instead of being silently replaced by the
    default (a client asking for 5 rows and given 100 would not know), and
    ``limit`` is bounded: an unbounded one lets one request read a whole table
    (or overflow the database's LIMIT)."""

    max_limit = 10_000

    def get_limit(self, request) -> int:
        return self._integer(request, self.limit_query_param, 1, self.max_limit, self.default_limit)

    def get_offset(self, request) -> int:
        return self._integer(request, self.offset_query_param, 0, MAX_OFFSET, 0)

    @staticmethod
    def _integer(request, name: str, low: int, high: int, default: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        value = int(raw) if DIGITS.fullmatch(raw) else None
        if value is None or not low <= value <= high:
            raise ValidationError({name: [f"an integer from {low} to {high}, not {raw[:40]!r}"]})
        return value

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_limit, default=self.default_limit)
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update(minimum=0, maximum=MAX_OFFSET, default=0)
        return parameters


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: what Django refuses before a view can (a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE, too many form fields or files) is, under
    /api/, JSON naming the limit: 413 for a body too large, else 400."""
    if not request.path.startswith(API_PREFIX):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        detail = f"the request body is larger than the limit of {limit} bytes"
        return JsonResponse({"detail": detail}, status=413)
    if isinstance(exception, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return JsonResponse({"detail": f"more than {limit} fields in the request"}, status=400)
    if isinstance(exception, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return JsonResponse({"detail": f"more than {limit} files in the request"}, status=400)
    # Other SuspiciousOperations (a disallowed Host header...) are refused without detail.
    return JsonResponse({"detail": "bad request"}, status=400)


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, but an unknown ``?format=`` or ``.<format>`` suffix
    is a 404 naming the format and the ones there are, not a bare "Not found."."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except Http404:
            asked = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
            known = ", ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise NotFound(f"no format {str(asked)[:40]!r} here; formats: {known}") from None


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: JSON under /api/ (as DRF's own 404s), Django's page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


NUL = "\x00"


def nul_path(data, path: str = "") -> str | None:
    """Where in parsed input (dicts, lists, strings) a NUL is: a dotted path
    such as ``vehicles.3.name`` ("" for the top level), or None."""
    if isinstance(data, str):
        return path if NUL in data else None
    if isinstance(data, QueryDict):
        data = {key: data.getlist(key) for key in data}
    if isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                return where.replace(NUL, "\\x00")
            found = nul_path(value, where)
            if found is not None:
                return found
    elif isinstance(data, list | tuple):
        for index, value in enumerate(data):
            found = nul_path(value, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


# No body of this API nests more than a few levels; a deeper one is refused
# before anything walks it (a few thousand "[" overflow json's recursion: a 500).
MAX_BODY_DEPTH = 32


def too_deep(data, limit: int = MAX_BODY_DEPTH) -> bool:
    """Whether parsed input nests lists or mappings more than ``limit`` deep (iterative)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping | list | tuple):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, Mapping) else value
            stack.extend((child, depth + 1) for child in children)
    return False


class _RefuseNul:
    def parse(self, stream, media_type=None, parser_context=None):
        deep = ParseError(f"the body nests lists or objects more than {MAX_BODY_DEPTH} levels deep")
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise deep from None
        if too_deep(getattr(parsed, "data", parsed)):
            raise deep
        where = nul_path(getattr(parsed, "data", parsed))
        if where is not None:
            raise ParseError(f"a NUL character (U+0000) in the body, at {where or 'the top level'}")
        return parsed


class JSONParser(_RefuseNul, parsers.JSONParser):
    pass


class FormParser(_RefuseNul, parsers.FormParser):
    pass


class MultiPartParser(_RefuseNul, parsers.MultiPartParser):
    pass


class RefuseNulMiddleware:
    """NUL in an /api/ URL: 404 in the path, 400 naming the query parameter.
    Middleware rather than views, so that routes, lookups and filters of every
    endpoint (present and future) are covered."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX):
            if NUL in request.path:
                return JsonResponse({"detail": "Not found."}, status=404)
            where = nul_path(request.GET)
            if where is not None:
                name = where.split(".", 1)[0]
                return JsonResponse({name: ["must not contain a NUL character (U+0000)"]}, status=400)
        return self.get_response(request)
