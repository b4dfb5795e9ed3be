"""The RTE activation API's shape, conversion and backoff: pure logic, no I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from dispatch.rte_api import (
    Activation,
    ActivationInvalid,
    activation_dump,
    activation_id_of,
    activation_parse,
    backoff_delay,
    poll_window,
)

T0 = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def item(**changes) -> dict:
    base = {
        "activation_id": "RTE-AFRR-000123",
        "product": "aFRR",
        "direction": "UPWARD",
        "value_mw": 0.025,
        "start_date": "2026-11-23T18:00:00+01:00",
        "end_date": "2026-11-23T18:05:00+01:00",
        "publication_date": "2026-11-23T17:59:58+01:00",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_an_upward_activation_is_positive_kilowatts_to_the_grid():
    activation = activation_parse(item())
    assert activation.signal_type == "aFRR"
    assert activation.power_kw == 25.0
    assert activation.start_at == T0  # 18:00+01:00
    assert activation.duration_s == 300
    assert activation.published_at == T0 - timedelta(seconds=2)


def test_a_downward_activation_is_negative_and_product_names_are_case_insensitive():
    activation = activation_parse(item(direction="DOWNWARD", product="mfrr", value_mw=1))
    assert (activation.signal_type, activation.power_kw) == ("mFRR", -1000.0)


def test_publication_date_is_optional():
    assert activation_parse(item(publication_date=None)).published_at is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"activation_id": None}, "activation_id"),
        ({"activation_id": ""}, "activation_id"),
        ({"activation_id": 42}, "activation_id"),
        ({"activation_id": "x" * 129}, "activation_id"),
        ({"product": "RR"}, "product"),
        ({"product": None}, "product"),
        ({"direction": "UP"}, "direction"),
        ({"value_mw": -1}, "value_mw"),
        ({"value_mw": "1"}, "value_mw"),
        ({"value_mw": True}, "value_mw"),
        ({"value_mw": float("nan")}, "value_mw"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"start_date": "2026-11-23T18:00:00"}, "start_date"),
        ({"end_date": None}, "end_date"),
        ({"end_date": "2026-11-23T17:59:00+01:00"}, "end_date"),
        ({"end_date": "2026-12-23T17:59:00+01:00"}, "end_date"),
        ({"publication_date": "soon"}, "publication_date"),
    ],
)
def test_each_invalid_field_is_named(changes, field):
    with pytest.raises(ActivationInvalid) as caught:
        activation_parse(item(**changes))
    assert caught.value.field == field


@pytest.mark.parametrize("bad", [None, [], "RTE-1", 3])
def test_an_item_that_is_not_an_object_is_invalid(bad):
    with pytest.raises(ActivationInvalid, match="activation: must be an object"):
        activation_parse(bad)
    assert activation_id_of(bad) is None


def test_dump_and_parse_round_trip():
    original = Activation("A-1", "FCR", -12.5, T0, T0 + timedelta(minutes=10), T0)
    assert activation_parse(activation_dump(original)) == original


def test_the_first_poll_looks_back_and_the_next_ones_overlap():
    assert poll_window(T0, None, overlap_s=300, lookback_s=3600) == (T0 - timedelta(hours=1), T0)
    last = T0 - timedelta(seconds=60)
    assert poll_window(T0, last, overlap_s=300, lookback_s=3600) == (last - timedelta(seconds=300), T0)
    # A cursor in the future (the clock went back) never makes an inverted window.
    start, end = poll_window(T0, T0 + timedelta(hours=1), overlap_s=0, lookback_s=0)
    assert start <= end


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    rng = random.Random(1)
    assert backoff_delay(0, base_s=2, cap_s=300, rng=rng) == 0
    for failures, ceiling in [(1, 2), (2, 4), (3, 8), (6, 64), (9, 300), (60, 300)]:
        delays = [backoff_delay(failures, base_s=2, cap_s=300, rng=rng) for _ in range(200)]
        assert all(ceiling / 10 <= d <= ceiling for d in delays), (failures, min(delays), max(delays))
        assert max(delays) > ceiling * 0.8  # jitter spreads over the range
