"""Availability windows of a delivery day (scheduler.windows): pure, no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from scheduler import windows
from scheduler.domain import day_slots

DAY = date(2025, 6, 3)  # an ordinary Tuesday in Paris: UTC+2
SLOTS = day_slots(DAY, "Europe/Paris", 15)


def paris(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 6, 2, 22, 0, tzinfo=UTC) + timedelta(hours=hour, minutes=minute)


def test_runs_of_available_slots_are_end_exclusive_windows():
    mask = np.array([0, 1, 1, 0, 0, 1, 1, 1], dtype=bool)
    assert windows.windows_of(mask) == ((1, 3), (5, 8))
    assert windows.windows_of(np.zeros(4, dtype=bool)) == ()
    assert windows.windows_of(np.ones(3, dtype=bool)) == ((0, 3),)


def test_a_slot_is_available_when_every_quarter_hour_reaches_the_threshold():
    quarters = windows.slot_quarters(day_slots(DAY, "Europe/Paris", 60), 60)
    assert quarters.shape == (24, 4)
    assert quarters[1, 0] - quarters[0, 0] == 4
    probabilities = np.full((3, 4), 0.9)
    probabilities[1, 2] = 0.4  # one quarter-hour of the second hour is doubtful
    assert windows.profile_mask(probabilities, 0.5).tolist() == [True, False, True]


def test_without_a_profile_the_vehicle_is_available_until_its_departure():
    mask = windows.until_departure(SLOTS, 15, paris(7, 40))
    assert windows.windows_of(mask) == ((0, 30),)  # 00:00-07:30: the 07:30 slot ends after 07:40
    assert not windows.until_departure(SLOTS, 15, None).any()
    assert not windows.until_departure(SLOTS, 15, paris(-2)).any()  # left the day before


def test_a_departure_inside_a_window_ends_it_and_later_windows_stay():
    mask = np.zeros(96, dtype=bool)
    mask[0:32] = True  # 00:00-08:00
    mask[72:96] = True  # 18:00-24:00
    cut = windows.cut_at_departure(mask, SLOTS, 15, paris(7, 10))
    assert windows.windows_of(cut) == ((0, 28), (72, 96))  # leaves during the 07:00 slot
    # A departure outside every window changes nothing.
    assert windows.windows_of(windows.cut_at_departure(mask, SLOTS, 15, paris(12))) == ((0, 32), (72, 96))
    assert windows.cut_at_departure(mask, SLOTS, 15, None) is mask


def test_slots_already_started_are_never_open():
    mask = windows.open_slots(SLOTS, paris(10, 5))
    assert windows.windows_of(mask) == ((41, 96),)


def test_quarter_hours_are_utc_ones_across_the_autumn_change():
    slots = day_slots(date(2025, 10, 26), "Europe/Paris", 15)
    quarters = windows.slot_quarters(slots, 15)
    assert quarters.shape == (100, 1)
    assert np.all(np.diff(quarters[:, 0]) == 1)  # 100 consecutive UTC quarter-hours, none twice
