"""Every operation of the HTTP API, read from its own OpenAPI schema (generated
in process, no server), so that tests walking "every endpoint" cover a new one
without being told; and every /api/ route of the URL resolver, to prove that
nothing routed escapes the schema."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from django.urls import URLPattern, URLResolver, get_resolver

OPERATIONS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # the schema's template, e.g. /api/vehicles/{id}/
    parameters: tuple[str, ...]  # query parameters
    has_body: bool

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, **values: str) -> str:
        """The path with its {placeholders} filled from ``values``."""
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], self.path)


@cache
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def operations() -> list[Operation]:
    found = []
    for path, item in schema()["paths"].items():
        for method, operation in item.items():
            if method in OPERATIONS:
                parameters = tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")
                found.append(Operation(method.upper(), path, parameters, "requestBody" in operation))
    return found


def view_class(callback):
    return getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback


def api_routes(patterns=None, prefix: str = "") -> list[tuple[str, object]]:
    """(route, view class) of every URL pattern under /api/ in the resolver."""
    routes = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes += api_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.lstrip("^").startswith("api/"):
            routes.append((route, view_class(pattern.callback)))
    return routes
