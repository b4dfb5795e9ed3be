"""Sentry set-up. Called from settings only when a DSN is configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from v2g_project.config import SentryConfig

_SECRET_KEYS = ("password", "secret", "token", "authorization", "dsn", "cookie")


def _scrub(event: dict, _hint: dict) -> dict:
    """Drop anything that looks like a credential before an event leaves."""

    def clean(value):
        if isinstance(value, dict):
            return {
                k: "[Filtered]" if any(s in str(k).lower() for s in _SECRET_KEYS) else clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(event)


def sentry_init(cfg: SentryConfig) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=cfg.dsn.get_secret_value(),
        environment=cfg.environment,
        release=cfg.release or None,
        traces_sample_rate=cfg.traces_sample_rate,
        send_default_pii=False,
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=True)],
        before_send=_scrub,
    )
