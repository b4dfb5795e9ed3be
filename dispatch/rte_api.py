"""The RTE activation API as the connector sees it: shape, parsing, backoff (issue 10).

Pure code, no Django or HTTP. RTE's real-time activation feed for
aggregators is not a public API (DOMAIN.md), so the product fixes the shape
it speaks, modelled on RTE's data portal (data.rte-france.com) conventions,
and serves exactly that shape from its mock server (``dispatch.rte_mock``):

- **Token**: ``POST token_url`` with HTTP Basic ``client_id:client_secret``
  and the form body ``grant_type=client_credentials`` answers
  ``{"access_token": "...", "token_type": "Bearer", "expires_in": 7200}``
  (OAuth 2.0 client credentials, RFC 6749 §4.4); bad credentials: 401
  ``{"error": "invalid_client"}``.
- **Activations**: ``GET api_url?start_date=...&end_date=...`` with
  ``Authorization: Bearer <token>``; both dates ISO 8601 with an offset; the
  window selects activations by their ``publication_date`` (start inclusive,
  end exclusive). The answer::

      {"activations": [
        {"activation_id": "RTE-AFRR-000123",      # unique, stable: the de-dup key
         "product": "aFRR",                       # FCR | aFRR | mFRR | MA | NEBEF | EcoWatt
         "direction": "UPWARD",                   # UPWARD (to the grid) | DOWNWARD
         "value_mw": 0.025,                       # >= 0, the aggregate volume asked
         "start_date": "2026-11-23T18:00:00+01:00",
         "end_date": "2026-11-23T18:05:00+01:00",
         "publication_date": "2026-11-23T17:59:58+01:00"}
      ]}

  An expired or revoked token: 401 with ``WWW-Authenticate: Bearer
  error="invalid_token"``; too many requests: 429 with ``Retry-After``.

Sign (SPEC §2): UPWARD regulation (the grid lacks energy: inject or consume
less) becomes positive ``power_kw``, DOWNWARD negative.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from v2g_project.config import SIGNAL_TYPES

DIRECTIONS = {"UPWARD": 1.0, "DOWNWARD": -1.0}
MAX_ID_LENGTH = 128
MAX_ACTIVATION_S = 7 * 24 * 3600  # as MAX_SIGNAL_DURATION_S: anything longer is not an activation
_PRODUCTS = {name.lower(): name for name in SIGNAL_TYPES}


class ActivationInvalid(ValueError):
    """An activation the connector cannot turn into a signal; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Activation:
    """One RTE activation, converted to the platform's terms."""

    activation_id: str
    signal_type: str
    power_kw: float  # signed, SPEC §2
    start_at: datetime
    end_at: datetime
    published_at: datetime | None

    @property
    def duration_s(self) -> float:
        return (self.end_at - self.start_at).total_seconds()


def activation_id_of(item: object) -> str | None:
    """The activation's id if it has a usable one (so even a bad item can be recorded once)."""
    if isinstance(item, Mapping):
        value = item.get("activation_id")
        if isinstance(value, str) and 0 < len(value.strip()) <= MAX_ID_LENGTH and "\x00" not in value:
            return value.strip()
    return None


def _date(item: Mapping, key: str, *, required: bool = True) -> datetime | None:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ActivationInvalid(key, "missing, or not an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ActivationInvalid(key, f"not an ISO 8601 date: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ActivationInvalid(key, "needs a UTC offset")
    return parsed


def activation_parse(item: object) -> Activation:
    """Check one item of the ``activations`` list and convert it (kW, signed, aware datetimes)."""
    if not isinstance(item, Mapping):
        raise ActivationInvalid("activation", f"must be an object, got {type(item).__name__}")
    activation_id = activation_id_of(item)
    if activation_id is None:
        raise ActivationInvalid("activation_id", f"must be a non-empty string of at most {MAX_ID_LENGTH}")
    product = item.get("product")
    signal_type = _PRODUCTS.get(product.lower()) if isinstance(product, str) else None
    if signal_type is None:
        raise ActivationInvalid("product", f"unknown {product!r}; one of {', '.join(SIGNAL_TYPES)}")
    direction = item.get("direction")
    if direction not in DIRECTIONS:
        raise ActivationInvalid("direction", f"must be UPWARD or DOWNWARD, got {direction!r}")
    value = item.get("value_mw")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
        raise ActivationInvalid("value_mw", f"must be a number of MW >= 0, got {value!r}")
    start_at = _date(item, "start_date")
    end_at = _date(item, "end_date")
    if end_at <= start_at:
        raise ActivationInvalid("end_date", "must be after start_date")
    if (end_at - start_at).total_seconds() > MAX_ACTIVATION_S:
        raise ActivationInvalid("end_date", "the activation lasts more than 7 days")
    return Activation(
        activation_id=activation_id,
        signal_type=signal_type,
        power_kw=round(float(value) * 1000.0 * DIRECTIONS[direction], 6),
        start_at=start_at,
        end_at=end_at,
        published_at=_date(item, "publication_date", required=False),
    )


def activation_dump(activation: Activation) -> dict:
    """The wire form of an activation (what the mock serves)."""
    return {
        "activation_id": activation.activation_id,
        "product": activation.signal_type,
        "direction": "UPWARD" if activation.power_kw >= 0 else "DOWNWARD",
        "value_mw": round(abs(activation.power_kw) / 1000.0, 9),
        "start_date": activation.start_at.isoformat(),
        "end_date": activation.end_at.isoformat(),
        "publication_date": (activation.published_at or activation.start_at).isoformat(),
    }


def poll_window(
    now: datetime, polled_until: datetime | None, *, overlap_s: float, lookback_s: float
) -> tuple[datetime, datetime]:
    """The publication window of the next poll: from a little before where the
    last successful poll ended (``overlap_s``, for activations published late or
    clocks apart; de-dup by id makes re-reading harmless), or ``lookback_s``
    back on the very first poll, up to ``now``."""
    start = (
        polled_until - timedelta(seconds=overlap_s) if polled_until else now - timedelta(seconds=lookback_s)
    )
    return min(start, now), now


def backoff_delay(failures: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^(failures-1))],
    never below a tenth of the ceiling (so a flapping server is not hammered)."""
    if failures <= 0:
        return 0.0
    ceiling = min(cap_s, base_s * 2 ** min(failures - 1, 30))
    return rng.uniform(ceiling / 10, ceiling)
