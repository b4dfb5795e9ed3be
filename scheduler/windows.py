"""Availability windows of a delivery day, per vehicle: the slots in which the
planner may use it. Pure code (stdlib + numpy), no Django.

The rule (README, "Day-ahead NEBEF plans"):

- A vehicle with a learned plug-in profile (``telemetry.prediction.PlugProfile``,
  with enough history for the prediction engine to trust it) is available in
  a slot when its plug-in probability is at least the engine's threshold in
  every quarter-hour of the slot (one quarter-hour for 15-minute slots, two or
  four for 30- or 60-minute ones). Its announced ``departure_at``, when it
  falls inside such a window, ends that window at the last slot that ends by
  then.
- A vehicle without a usable profile is assumed plugged in until its announced
  ``departure_at``: every slot that ends by then. Without a departure time it
  is not planned (nothing says it will be plugged in).
- Slots that have already started (``now``) are never in a window.

Windows are ``(first_slot, end_slot)`` with ``end_slot`` exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

QUARTER_S = 900


def slot_quarters(slot_starts: Sequence[datetime], slot_minutes: int) -> np.ndarray:
    """The UTC quarter-hours (epoch // 900) of each slot: shape (slots, slot_minutes // 15)."""
    if slot_minutes % 15:
        raise ValueError(f"slot_minutes must be a multiple of 15, got {slot_minutes}")
    first = np.array([int(start.timestamp()) // QUARTER_S for start in slot_starts], dtype=np.int64)
    return first[:, None] + np.arange(slot_minutes // 15, dtype=np.int64)[None, :]


def profile_mask(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Slots (rows of quarter-hour ``probabilities``) whose every quarter-hour
    reaches ``threshold``."""
    return np.all(probabilities >= threshold, axis=1)


def open_slots(slot_starts: Sequence[datetime], now: datetime) -> np.ndarray:
    """Slots that have not started yet."""
    return np.array([start >= now for start in slot_starts], dtype=bool)


def until_departure(
    slot_starts: Sequence[datetime], slot_minutes: int, departure_at: datetime | None
) -> np.ndarray:
    """Slots that end by ``departure_at`` (none without one)."""
    if departure_at is None:
        return np.zeros(len(slot_starts), dtype=bool)
    length = timedelta(minutes=slot_minutes)
    return np.array([start + length <= departure_at for start in slot_starts], dtype=bool)


def cut_at_departure(
    mask: np.ndarray, slot_starts: Sequence[datetime], slot_minutes: int, departure_at: datetime | None
) -> np.ndarray:
    """``mask`` with the run of available slots in which ``departure_at`` falls
    ended at the last slot that ends by then; other runs are kept (the vehicle
    may come back later in the day)."""
    if departure_at is None:
        return mask
    length = timedelta(minutes=slot_minutes)
    leaving = next((k for k, start in enumerate(slot_starts) if start <= departure_at < start + length), None)
    cut = mask.copy()
    if leaving is None:
        return cut
    # The slot it leaves in and the rest of that run end; earlier slots end by then.
    k = leaving
    while k < len(cut) and cut[k]:
        cut[k] = False
        k += 1
    return cut


def windows_of(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Runs of True in ``mask`` as ``(first, end)`` pairs, ``end`` exclusive."""
    padded = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True))
