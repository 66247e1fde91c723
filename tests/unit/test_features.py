"""The one feature function, on tiny hand-built windows with the expected numbers worked out."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.events import EVENT_TYPE_CODES as EVENT_TYPE_INDEX
from core.records import Click
from model.data import (
    TimeSplit,
    clean_events,
    purchase_labels,
    target_positions,
)
from model.features import OOV, PAD, FeatureSpec, encode_windows, window_index

SPEC = FeatureSpec(categories=("shoes", "hats"))  # shoes -> 2, hats -> 3, anything else -> OOV (1)
MONDAY_NOON_MS = 1_700_481_600_000  # 2023-11-20 12:00:00 UTC, a Monday


def test_category_index_with_padding_and_oov() -> None:
    assert SPEC.category_index(["shoes", "hats", "socks"]).tolist() == [2, 3, OOV]
    assert SPEC.n_categories == 4
    assert SPEC.index_to_category.tolist() == ["", "", "shoes", "hats"]


def test_window_index_left_pads_and_stops_at_the_user_start() -> None:
    # events 0..4 of one user starting at 0; windows of length 3 ending before events 1 and 4
    index = window_index(np.array([1, 4]), np.array([0, 0]), 3)
    assert index.tolist() == [[-1, -1, 0], [1, 2, 3]]
    # a second user starting at 3: the window before event 4 may not reach back into the first user
    assert window_index(np.array([4]), np.array([3]), 3).tolist() == [[-1, -1, 3]]


def test_encode_windows_worked_example() -> None:
    cats = np.array(["shoes", "socks", "shoes"], dtype=object)
    codes = np.array([7, 9, 7])  # equal codes = equal raw ids
    types = np.array([EVENT_TYPE_INDEX["view"], EVENT_TYPE_INDEX["cart"], EVENT_TYPE_INDEX["view"]])
    # 12:00:00, 12:00:10, 12:01:50 on a Monday
    times = np.array([MONDAY_NOON_MS, MONDAY_NOON_MS + 10_000, MONDAY_NOON_MS + 110_000])
    index = window_index(np.array([3]), np.array([0]), 4)  # [-1, 0, 1, 2]
    x = encode_windows(SPEC.category_index(cats), codes, types, times, index, SPEC)
    assert x["category"].tolist() == [[PAD, 2, OOV, 2]]
    # input index = position in EVENT_TYPES + 1 (view is 1 -> 2, cart is 3 -> 4); padding 0
    assert x["event_type"].tolist() == [[0, 2, 4, 2]]
    steps = x["steps"][0]
    assert steps[0].tolist() == [0.0] * 9  # padding is all zeros
    # hour of day 12:00 -> angle pi: sin 0, cos -1; Monday -> day 0: sin 0, cos 1
    np.testing.assert_allclose(steps[1, :4], [0.0, -1.0, 0.0, 1.0], atol=1e-6)
    # gap to the previous event: 0 for the window's first, then log1p(10 s)/10 and log1p(100 s)/10
    np.testing.assert_allclose(steps[1:, 4], [0.0, math.log1p(10) / 10, math.log1p(100) / 10], rtol=1e-6)
    # age before the newest event: log1p(110 s)/10, log1p(100 s)/10, 0
    np.testing.assert_allclose(steps[1:, 5], [math.log1p(110) / 10, math.log1p(100) / 10, 0.0], rtol=1e-6)
    # same raw category as the newest event (shoes): yes, no, yes
    assert steps[1:, 6].tolist() == [1.0, 0.0, 1.0]
    # log1p(occurrences in the window): shoes twice, socks once
    np.testing.assert_allclose(steps[1:, 7], [math.log1p(2), math.log1p(1), math.log1p(2)], rtol=1e-6)
    # newest occurrence of its category: the first shoes is not, socks and the last shoes are
    assert steps[1:, 8].tolist() == [0.0, 1.0, 1.0]


def test_features_do_not_depend_on_padding_length() -> None:
    cats = np.array(["shoes", "hats"], dtype=object)
    args = (SPEC.category_index(cats), np.array([1, 2]), np.array([1, 1]), np.array([MONDAY_NOON_MS, MONDAY_NOON_MS + 5000]))
    short = encode_windows(*args, window_index(np.array([2]), np.array([0]), 2), SPEC)
    long = encode_windows(*args, window_index(np.array([2]), np.array([0]), 6), SPEC)
    for name in ("category", "event_type", "steps"):
        np.testing.assert_array_equal(long[name][:, -2:], short[name])


def click(user: str, cat: str, etype: str, t_s: int, item: str = "i") -> Click:
    return Click(event_id="e", user_id=user, item_id=item, category_id=cat, event_type=etype, event_time_ms=t_s * 1000)


def test_cleaning_split_and_purchase_labels() -> None:
    day = 86_400
    clicks = [click("a", "x", "view", 1000 * day + 5), click("a", "x", "view", 1000 * day + 5),  # duplicate
              click("a", "y", "unknown", 1000 * day + 6),  # unknown type
              click("b", "x", "view", 1000 * day + 1), click("a", "x", "cart", 1000 * day + 1),
              click("a", "x", "purchase", 1000 * day + 100), click("b", "z", "view", 1000 * day + 200)]
    clicks += [click(f"u{i}", "x", "view", 1000 * day + 300 + i) for i in range(1000)]
    clicks.append(click("late", "x", "view", 10 * day))  # months away: dropped
    log = clean_events(clicks)
    assert log.cleaning == {"read": 1008, "duplicates": 1, "unknown_type": 1, "outlying_time": 1, "kept": 1005}
    a = slice(log.user_starts[0], log.user_starts[1])  # users sort by id: "a" first, ordered by time
    assert log.category_ids[a].tolist() == ["x", "x", "x"] and log.event_types[a].tolist() == [3, 1, 5]
    labels = purchase_labels(log, horizon=2)
    # cart at t+1 is followed by view (t+5) and purchase (t+100, same session) -> the view's and the
    # purchase's positions are labelled: a prediction made before them sees the purchase within 2 events
    assert labels[a].tolist() == [False, True, True]
    split = TimeSplit.by_fraction(log, test=0.5, val=0.0)
    test = target_positions(log, split.test_start_ms, None)
    assert all(log.times_ms[test] >= split.test_start_ms)
    assert not set(test.tolist()) & set(log.user_starts[:-1].tolist())  # a target has an earlier event


def test_a_duplicate_is_an_event_equal_in_every_field_and_an_empty_log_cleans_to_nothing() -> None:
    t = 10**9
    log = clean_events([click("a", "x", "view", t), click("a", "x", "view", t, item="j"),
                        click("a", "x", "cart", t), click("b", "x", "view", t), click("a", "x", "view", t)])
    assert log.cleaning["duplicates"] == 1 and len(log) == 4
    assert log.user_ids.tolist() == ["a", "a", "a", "b"] and log.event_types.tolist() == [1, 1, 3, 1]  # input order
    empty = clean_events([])
    assert len(empty) == 0 and empty.n_users == 0 and empty.cleaning["kept"] == 0


@pytest.mark.parametrize("horizon", [1, 3])
def test_purchase_labels_stay_in_the_session(horizon: int) -> None:
    hour = 3600
    log = clean_events([click("a", "x", "view", 10**9), click("a", "x", "purchase", 10**9 + hour)])
    # the purchase starts a new session (gap > 30 min): only its own position is labelled
    assert purchase_labels(log, horizon).tolist() == [False, True]


def test_window_summary_counts_event_types_per_time_span() -> None:
    from model.network import WindowSummary

    # one window: a cart two days before the newest event, then two views 5 s apart (left-padded to 4)
    times = MONDAY_NOON_MS + np.array([0, 2 * 86_400_000, 2 * 86_400_000 + 5_000])
    types = np.array([EVENT_TYPE_INDEX[t] for t in ("cart", "view", "view")], dtype=np.int8)
    x = encode_windows(SPEC.category_index(["shoes"] * 3), np.zeros(3, dtype=np.int64), types, times,
                       window_index(np.array([3]), np.array([0]), 4), SPEC)
    mask = x["event_type"] != PAD
    out = np.expm1(np.asarray(WindowSummary(SPEC.n_event_types)([x["event_type"], x["steps"], mask])))[0]
    k = SPEC.n_event_types - 1  # per span, one column per EVENT_TYPES position
    view, cart = EVENT_TYPE_INDEX["view"], EVENT_TYPE_INDEX["cart"]
    whole, minute, five_hours = out[0:k], out[k:2 * k], out[4 * k:5 * k]
    events = out[5 * k:]
    # the whole window: 2 views and 1 cart in 3 events
    assert whole[view] == pytest.approx(2, abs=1e-5) and whole[cart] == pytest.approx(1, abs=1e-5)
    # within ~1 min (scaled age log1p(60 s)/10 = 0.411): both views (ages 5 s and 0 s, scaled 0.179 and 0;
    # the cut-off is soft: sigmoid(20 * (0.411 - 0.179)) = 0.990), the two-day-old cart not at all
    assert minute[view] == pytest.approx(1.990, abs=2e-3) and minute[cart] == pytest.approx(0, abs=1e-4)
    # within ~5 h (cut-off 0.980): the cart's scaled age is log1p(172,805 s)/10 = 1.206, weight
    # sigmoid(20 * (0.980 - 1.206)) = 0.0108: a soft cut-off lets a little of a two-day-old event through
    assert five_hours[cart] == pytest.approx(0.0108, abs=2e-4) and five_hours[view] == pytest.approx(2, abs=1e-3)
    assert events[0] == pytest.approx(3, abs=1e-5) and events[1] == pytest.approx(1.990, abs=2e-3)


def test_repetition_features_match_their_pairwise_definition() -> None:
    from model.features import _repetitions

    rng = np.random.default_rng(1)
    for _ in range(200):
        b, t = int(rng.integers(1, 20)), int(rng.integers(1, 40))
        codes = rng.integers(0, int(rng.integers(1, 12)), (b, t))
        valid = np.arange(t)[None, :] >= rng.integers(0, t + 1, b)[:, None]  # left padding
        codes = np.where(valid, codes, -1)
        same = (codes[:, :, None] == codes[:, None, :]) & valid[:, None, :]  # step i vs every step j
        count, newest = _repetitions(codes)
        assert (count[valid] == same.sum(axis=-1)[valid]).all()
        assert (newest[valid] == ~np.triu(same, k=1).any(axis=-1)[valid]).all()  # no later step repeats it
