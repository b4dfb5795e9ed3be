"""Sentry set-up. Called from settings only when a DSN is configured: with an
empty DSN the SDK is never even imported (no client, no thread, no patching).

What leaves the process is described in docs/observability.md:

- errors of Django requests, Celery tasks and ERROR log lines (Django, Celery
  and logging integrations), tagged with what they were about: the log context
  of ``v2g_project.logcontext`` (``dispatch_id``, ``vehicle_id``,
  ``signal_type``), taken where the exception was raised;
- Celery Beat jobs as cron check-ins (``monitor_beat_tasks``);
- never a credential: no local variables, no cookies or user data
  (``send_default_pii`` off), anything under a credential-like key
  (headers, cookies, query strings, environment, bodies, extras, breadcrumbs)
  replaced, and every configured secret value masked wherever it appears.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, SecretStr

from v2g_project import logcontext

if TYPE_CHECKING:
    from v2g_project.config import Config

FILTERED = "[Filtered]"
# A key containing one of these (case-insensitive) has its value replaced.
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "auth",
    "credential",
    "api_key",
    "apikey",
    "private_key",
    "dsn",
    "cookie",
    "session",
    "csrf",
)
# Shorter secret values are not searched for in free text (they would mangle
# ordinary words); their keys are still filtered.
MIN_SECRET_LENGTH = 6
TAG_FIELDS = (*logcontext.FIELDS,)


def config_secrets(config: BaseModel) -> list[str]:
    """Every secret value of the configuration (each SecretStr, and the password
    of those that are URLs), longest first so that a URL is masked whole."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                found.add(secret)
                try:
                    password = urlsplit(secret).password
                except ValueError:
                    password = None
                if password:
                    found.add(password)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(config)
    return sorted(found, key=len, reverse=True)


def _secret_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


class Scrubber:
    """The ``before_send`` hook: tags the event with its log context, then
    removes credentials from it (by key, and by value for configured secrets)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def __call__(self, event: dict, hint: dict | None) -> dict:
        tags = self.context_tags(hint or {}) if event.get("type") != "check_in" else {}
        if tags:
            event["tags"] = {**tags, **(event.get("tags") or {})}
        request = event.get("request")
        if isinstance(request, dict) and isinstance(request.get("query_string"), str):
            request["query_string"] = self._query(request["query_string"])
        modules = event.pop("modules", None)  # installed packages: "authlib" is no credential
        event = self._clean(event)
        if modules is not None:
            event["modules"] = modules
        return event

    @staticmethod
    def context_tags(hint: Mapping[str, Any]) -> dict[str, str]:
        """What the event is about: the log context where the exception was
        raised, else the one of the log line reported, else the current one."""
        tags: dict[str, str] = {}
        exc_info = hint.get("exc_info")
        record = hint.get("log_record")
        sources = [
            logcontext.current(),
            {k: getattr(record, k) for k in TAG_FIELDS if getattr(record, k, None)} if record else {},
            logcontext.exception_context(exc_info[1] if exc_info else None),
        ]
        for source in sources:  # later sources are closer to the failure: they win
            tags.update({k: str(v)[:200] for k, v in source.items() if k in TAG_FIELDS and v})
        return tags

    def _query(self, query: str) -> str:
        try:
            pairs = parse_qsl(query, keep_blank_values=True)
        except ValueError:
            return FILTERED
        return urlencode([(k, FILTERED if _secret_key(k) else v) for k, v in pairs], safe="[]")

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, FILTERED)
        return text

    def _clean(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                self._mask(k) if isinstance(k, str) else k: FILTERED if _secret_key(k) else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, str):
            return self._mask(value)
        return value


def sentry_init(config: Config, *, extra_secrets: Sequence[str] = ()) -> None:
    """Start the SDK for this process (web, worker, Beat, bridge), from the
    ``sentry`` section; ``extra_secrets`` are values to mask besides the
    configuration's own secrets (e.g. Django's SECRET_KEY)."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    cfg = config.sentry
    scrubber = Scrubber([*config_secrets(config), *extra_secrets])
    sentry_sdk.init(
        dsn=cfg.dsn.get_secret_value(),
        environment=cfg.environment,
        release=cfg.release or None,
        traces_sample_rate=cfg.traces_sample_rate,
        send_default_pii=False,
        # Locals of a dispatch frame are ids and numbers, but a settings or
        # client object in some frame could hold a credential: never sent.
        include_local_variables=False,
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, "dsn", "static_token"], recursive=True),
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=True)],
        # Breadcrumbs only leave inside an event, which before_send cleans whole.
        before_send=scrubber,
        before_send_transaction=scrubber,
    )
