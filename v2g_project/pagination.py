"""Keyset ("seek") cursor pagination for big, append-mostly tables.

DRF's CursorPagination keeps only the first ordering field in its cursor and
skips ties with an offset capped at ``offset_cutoff`` (1000). A dispatch round
logs every vehicle with the same time, so with 10,000 vehicles in a round its
cursor would loop inside the round. Here the cursor holds the whole ordering
key (e.g. ``(at, id)``, the last field unique), and a page is "the next
``page_size`` rows after this key": one index range scan at any depth, where
``OFFSET`` reads and throws away every row before the page.

Same response shape, query parameter and cursor encoding as DRF's
CursorPagination (``{"next", "previous", "results"}``, ``?cursor=``); bad
``page_size``, ``ordering`` or ``cursor`` values are a 400 naming the
parameter.
"""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from binascii import Error as Base64Error
from urllib import parse

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import BooleanField, F, Func, QuerySet, Value
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.utils.urls import replace_query_param


class KeysetPagination(CursorPagination):
    """Subclasses set ``orderings``: the accepted values of ``?ordering=``
    (first = default), each mapped to the fields ordered by, all ascending or
    all descending, the last one unique (the tie-break), with an index on
    them in that order."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for fields in cls.orderings.values():
            if len({f.startswith("-") for f in fields}) != 1:
                raise TypeError(f"{cls.__name__}: {fields} mixes ascending and descending fields")

    orderings: dict[str, tuple[str, ...]] = {}
    ordering_query_param = "ordering"
    page_size_query_param = "page_size"
    max_page_size = 1000

    # --- parameters --------------------------------------------------------------

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {self.page_size_query_param: [f"an integer from 1 to {self.max_page_size}, not {raw[:40]!r}"]}
            )
        return size

    def get_ordering(self, request, queryset=None, view=None) -> tuple[str, ...]:
        raw = request.query_params.get(self.ordering_query_param) or next(iter(self.orderings))
        if raw not in self.orderings:
            raise ValidationError(
                {self.ordering_query_param: [f"one of {', '.join(self.orderings)}, not {raw[:40]!r}"]}
            )
        return self.orderings[raw]

    def _bad_cursor(self) -> ValidationError:
        return ValidationError(
            {self.cursor_query_param: ["not a valid cursor: follow the next or previous link as given"]}
        )

    def decode_cursor(self, request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            tokens = parse.parse_qs(b64decode(encoded.encode("ascii"), validate=True).decode("ascii"))
            reverse = tokens.get("r", ["0"])[0] == "1"
            position = json.loads(tokens["p"][0])
        except (KeyError, ValueError, UnicodeError, Base64Error):
            raise self._bad_cursor() from None
        if not isinstance(position, list) or len(position) != len(self.ordering):
            raise self._bad_cursor()
        return Cursor(offset=0, reverse=reverse, position=position)

    def _key(self, queryset: QuerySet, position: list) -> list:
        """The cursor's values as the model fields read them (a malformed one is a 400)."""
        meta = queryset.model._meta
        try:
            key = [
                meta.get_field(name.lstrip("-")).to_python(value)
                for name, value in zip(self.ordering, position, strict=True)
            ]
        except (DjangoValidationError, TypeError, ValueError):
            raise self._bad_cursor() from None
        if None in key:  # no ordering field is nullable; "(at, id) < (NULL, NULL)" matches nothing
            raise self._bad_cursor()
        return key

    def encode_position(self, position: list, reverse: bool = False) -> str:
        tokens = {"p": json.dumps(position, separators=(",", ":"))}
        if reverse:
            tokens["r"] = "1"
        return b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")

    def _position(self, row) -> list:
        values = []
        for name in self.ordering:
            value = row[name.lstrip("-")] if isinstance(row, dict) else getattr(row, name.lstrip("-"))
            values.append(value.isoformat() if hasattr(value, "isoformat") else value)
        return values

    # --- the page ----------------------------------------------------------------

    @staticmethod
    def _after(scan: list[str], key: list, model) -> Func:
        """Rows strictly after ``key`` in the scan order, as one row-value
        comparison, ``(at, id) < (%s, %s)``: PostgreSQL starts an index scan
        right at the key, where ``at < x OR (at = x AND id < y)`` would read
        and drop every tie (a whole round of vehicles) first. SQLite has row
        values too (3.15+)."""
        names = [f.lstrip("-") for f in scan]
        fields = [model._meta.get_field(name) for name in names]
        columns = Func(*(F(name) for name in names), template="(%(expressions)s)")
        values = Func(
            *(Value(v, output_field=f) for v, f in zip(key, fields, strict=True)),
            template="(%(expressions)s)",
        )
        operator = " < " if scan[0].startswith("-") else " > "
        return Func(
            columns, values, template="%(expressions)s", arg_joiner=operator, output_field=BooleanField()
        )

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self.cursor = self.decode_cursor(request)
        reverse = bool(self.cursor and self.cursor.reverse)
        # A "previous" cursor scans the other way, then turns the page round.
        scan = (
            [f[1:] if f.startswith("-") else f"-{f}" for f in self.ordering]
            if reverse
            else list(self.ordering)
        )
        queryset = queryset.order_by(*scan)
        if self.cursor is not None:
            key = self._key(queryset, self.cursor.position)
            queryset = queryset.filter(self._after(scan, key, queryset.model))

        rows = list(queryset[: self.page_size + 1])
        more = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        if reverse:
            self.page.reverse()
            self.has_previous, self.has_next = more, True
        else:
            self.has_next, self.has_previous = more, self.cursor is not None
        if self.page:
            self.previous_position = self._position(self.page[0])
            self.next_position = self._position(self.page[-1])
        else:  # past either end: the way back starts from the cursor itself
            self.previous_position = self.next_position = self.cursor.position if self.cursor else None
        self.display_page_controls = self.has_previous or self.has_next
        return self.page

    def get_next_link(self) -> str | None:
        if not self.has_next or self.next_position is None:
            return None
        return replace_query_param(
            self.base_url, self.cursor_query_param, self.encode_position(self.next_position)
        )

    def get_previous_link(self) -> str | None:
        if not self.has_previous or self.previous_position is None:
            return None
        encoded = self.encode_position(self.previous_position, reverse=True)
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size, default=self.page_size)
        parameters.append(
            {
                "name": self.ordering_query_param,
                "required": False,
                "in": "query",
                "description": "Sort order; ties are broken by insertion order.",
                "schema": {
                    "type": "string",
                    "enum": list(self.orderings),
                    "default": next(iter(self.orderings)),
                },
            }
        )
        return parameters
