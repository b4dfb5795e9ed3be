"""OpenAPI schema generation (drf-spectacular): the error responses every
endpoint shares and the authentication schemes, so views only declare what
is particular to them.

DRF answers with the same bodies everywhere: ``{"detail": "..."}`` for 401,
403, 404 and 429, and ``{"<field>": ["message", ...]}`` for a 400. Which of
them an operation can return follows from the view's configuration
(permissions, throttles, path parameters, request body), so the schema says so
for each operation, derived from that configuration rather than repeated.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers


class ErrorSerializer(serializers.Serializer):
    """DRF's error body: one human-readable message."""

    detail = serializers.CharField()

    class Meta:
        ref_name = "Error"


class ValidationErrorSerializer(serializers.Serializer):
    """A 400: each invalid field (parameter or body field) with its messages,
    errors not about one field under ``non_field_errors``; or, when the body
    cannot be parsed at all, ``{"detail": "..."}``."""

    class Meta:
        ref_name = "ValidationError"


class ValidationErrorExtension(OpenApiSerializerExtension):
    target_class = ValidationErrorSerializer

    def map_serializer(self, auto_schema, direction):
        fields = {
            "type": "object",
            "description": "Field name -> the messages explaining why its value was refused.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "example": {"start_at": ["needs a UTC offset (ISO 8601, e.g. 2025-01-31T12:00:00+00:00)"]},
        }
        unparsable = auto_schema.resolve_serializer(ErrorSerializer, direction).ref
        return {"anyOf": [fields, unparsable]}


VALIDATION_ERROR = OpenApiResponse(
    ValidationErrorSerializer, "Invalid parameter or body; the body names the field."
)
NOT_FOUND = OpenApiResponse(ErrorSerializer, "No such object (or not visible to these credentials).")
UNAUTHENTICATED = OpenApiResponse(
    ErrorSerializer,
    "No valid credentials: none, or an unknown, revoked or expired token (the body says which; "
    "`WWW-Authenticate` says how to authenticate).",
)
FORBIDDEN = OpenApiResponse(
    ErrorSerializer,
    "Authenticated but not allowed: a fleet outside the token's scope, or a session request "
    "without its CSRF token.",
)
THROTTLED = OpenApiResponse(
    ErrorSerializer,
    "Too many requests with this token; retry after the `Retry-After` header's seconds.",
)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus:

    - the error responses each operation can give (responses a view declares
      itself with ``@extend_schema`` win);
    - ``allowEmptyValue`` on django-filter parameters, which ignore a blank value;
    - OpenAPI links a view declares as ``openapi_links = {action: {status:
      {name: link}}}``, for readers and for the stateful fuzz test.
    """

    def get_operation(self, path, path_regex, path_prefix, method, registry) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for code, response in self._error_responses(path, operation).items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, ["application/json"])
        # django-filter treats an empty value as no filter at all (the way an HTML
        # form sends a field left blank): say so, or "start=" reads as invalid.
        filters = getattr(getattr(self.view, "filterset_class", None), "base_filters", {})
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] in filters:
                parameter["allowEmptyValue"] = True
        action = getattr(self.view, "action", None) or self.method.lower()
        for code, links in getattr(self.view, "openapi_links", {}).get(action, {}).items():
            responses[str(code)]["links"] = links
        return operation

    def map_parsers(self) -> list[str]:
        # The API speaks JSON (SPEC §11). Form encodings are still parsed, for
        # the browsable API and Django's test client, but not part of the contract.
        return ["application/json"]

    def _error_responses(self, path: str, operation: dict) -> dict[str, OpenApiResponse]:
        errors: dict[str, OpenApiResponse] = {}
        if "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", [])):
            errors["400"] = VALIDATION_ERROR
        if not any(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions()):
            errors["401"] = UNAUTHENTICATED
            errors["403"] = FORBIDDEN
        if "{" in path:
            errors["404"] = NOT_FOUND
        if self.view.get_throttles():
            errors["429"] = THROTTLED
        return errors


# The authentication classes are fleet's (fleet/auth.py), named by path so
# that the schema needs no import of them. ``optional``: no warning while a
# class is absent; an authenticator the schema cannot describe still warns.
class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.auth.BearerTokenAuthentication"
    name = "bearerAuth"
    optional = True

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "`Authorization: Bearer <token>`: an API token issued by an operator (stored hashed, "
                "revocable, optionally expiring), scoped to some fleets or to all, throttled per token."
            ),
        }


class StaffSessionScheme(OpenApiAuthenticationExtension):
    target_class = "fleet.auth.StaffSessionAuthentication"
    name = "cookieAuth"
    optional = True

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": (
                "The session of a staff user logged in to the operator console (/admin/); "
                "unsafe methods also need the `X-CSRFToken` header."
            ),
        }
