"""Category demand windows without a broker: sums, distinct users, grace, late predictions, partitions."""
from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.derived_records import CategoryDemand
from core.records import Prediction
from schemas.codec import RecordCodec
from streams.demand import DemandAggregator

HOUR = 3_600_000
BASE = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # an hour boundary, so also a minute boundary
NOW_S = 1_800_000_000.0


def prediction(user: str, t: int, categories: tuple[tuple[str, float], ...], p: float) -> Prediction:
    return Prediction(event_id=f"{user}-{t}", user_id=user, event_time_ms=t, predicted_at_ms=0, model_version="v",
                      top_categories=categories, next_event_type={}, purchase_probability=p, window_length=1)


def aggregator(sizes: tuple[int, ...] = (60,), grace_s: int = 10) -> DemandAggregator:
    return DemandAggregator(sizes, grace_s, partitions=4, clock=lambda: NOW_S)


def test_sums_users_and_purchases_of_a_closed_window() -> None:
    agg = aggregator()
    agg.add([
        (0, prediction("u1", BASE + 61_000, (("a", 0.5), ("b", 0.25)), 0.4)),
        (0, prediction("u1", BASE + 62_000, (("a", 0.75),), 0.2)),
        (0, prediction("u2", BASE + 119_000, (("b", 0.5), ("a", 0.125)), 1.0)),
    ])
    assert agg.close_ready() == []  # the watermark (BASE + 119 s) has not passed the end of [60 s, 120 s) + 10 s
    agg.add([(0, prediction("u3", BASE + 130_000, (("c", 1.0),), 0.0))])
    a, b = agg.close_ready()
    # a: visits 0.5 + 0.75 + 0.125 = 1.375; purchases 0.4*0.5 + 0.2*0.75 + 1.0*0.125 = 0.2 + 0.15 + 0.125 = 0.475
    assert (a.category_id, a.window_size_s, a.window_start_ms) == ("a", 60, BASE + 60_000)
    assert (a.expected_visits, a.distinct_users, a.predictions) == (1.375, 2, 3)
    assert a.expected_purchases == pytest.approx(0.475)
    # b: visits 0.25 + 0.5 = 0.75; purchases 0.4*0.25 + 1.0*0.5 = 0.6
    assert (b.category_id, b.expected_visits, b.distinct_users, b.predictions) == ("b", 0.75, 2, 2)
    assert b.expected_purchases == pytest.approx(0.6)
    assert (a.partition, a.partitions, a.closed_at_ms) == (0, 4, NOW_S * 1000)
    # the worker's first click on partition 0 was at 61 s: the window starting at 60 s may lack earlier clicks
    assert not a.complete
    assert agg.open_windows() == 1


def test_a_window_starting_a_grace_period_after_the_first_click_is_complete() -> None:
    agg = aggregator()
    agg.add([(0, prediction("u1", BASE + 49_000, (("a", 1.0),), 0.5)),
             (0, prediction("u1", BASE + 61_000, (("a", 1.0),), 0.5)),
             (0, prediction("u1", BASE + 200_000, (("a", 1.0),), 0.5))])
    first, second = agg.close_ready()
    assert (first.window_start_ms, first.complete) == (BASE, False)
    assert (second.window_start_ms, second.complete) == (BASE + 60_000, True)  # 60 s >= 49 s + 10 s


def test_late_clicks_within_grace_count_and_later_ones_are_dropped() -> None:
    agg = aggregator()
    agg.add([(0, prediction("u1", BASE + 1_000, (("a", 1.0),), 0.0)),
             (0, prediction("u1", BASE + 65_000, (("a", 1.0),), 0.0))])  # past the end of [0, 60 s)
    agg.add([(0, prediction("u2", BASE + 59_000, (("a", 1.0),), 0.0))])  # within the grace: counted
    assert agg.close_ready() == []
    agg.add([(0, prediction("u3", BASE + 70_000, (("a", 1.0),), 0.0)),  # the watermark reaches 60 s + 10 s
             (0, prediction("u4", BASE + 30_000, (("a", 1.0),), 0.0))])  # too late: dropped, counted as late
    (closed,) = agg.close_ready()
    assert (closed.window_start_ms, closed.expected_visits, closed.distinct_users) == (BASE, 2.0, 2)
    assert agg.counters.late == 1 and agg.counters.predictions == 5


def test_each_window_size_closes_on_its_own() -> None:
    agg = aggregator(sizes=(60, 3600))
    agg.add([(0, prediction("u1", BASE + i * 30_000, (("a", 1.0),), 0.5)) for i in range(5)])  # 0 to 120 s
    assert {(r.window_size_s, r.window_start_ms) for r in agg.close_ready()} == {(60, BASE)}
    agg.add([(0, prediction("u2", BASE + HOUR + 10_000, (("a", 1.0),), 0.5))])
    closed = agg.close_ready()
    hour = [r for r in closed if r.window_size_s == 3600]
    assert len(hour) == 1 and (hour[0].expected_visits, hour[0].distinct_users) == (5.0, 1)
    assert {r.window_start_ms for r in closed if r.window_size_s == 60} == {BASE + 60_000, BASE + 120_000}


def test_partitions_have_their_own_watermarks_and_a_returning_partition_starts_afresh() -> None:
    agg = aggregator()
    agg.add([(0, prediction("u1", BASE + 1_000, (("a", 1.0),), 0.5)),
             (1, prediction("u2", BASE + 500_000, (("a", 1.0),), 0.5))])
    assert agg.close_ready() == []  # partition 1's clicks do not move partition 0's clock
    agg.add([(0, prediction("u1", BASE + 2_000, (("a", 1.0),), 0.5))])
    agg.keep_only({1})  # partition 0 went to another worker: its open window is dropped
    agg.add([(0, prediction("u1", BASE + 30_000, (("a", 1.0),), 0.5)),
             (0, prediction("u1", BASE + 200_000, (("a", 1.0),), 0.5))])
    (again,) = [r for r in agg.close_ready() if r.window_start_ms == BASE]
    assert again.predictions == 1 and not again.complete


timed = st.tuples(st.integers(0, 3), st.sampled_from(["u1", "u2", "u3", "u4"]), st.integers(0, 400_000),
                  st.lists(st.tuples(st.sampled_from("abcde"), st.floats(0, 1)), min_size=1, max_size=3,
                           unique_by=lambda t: t[0]),
                  st.floats(0, 1))


def reference(made: list, sizes_ms: tuple[int, ...], grace_ms: int) -> tuple[dict, int]:
    """The rule stated plainly: every prediction updates every size unless it is late by its partition's
    watermark; windows closed at the end are those whose end + grace the final watermark reached."""
    cells: dict = {}
    watermark: dict[int, int] = {}
    late = 0
    for part, p in made:
        t = p.event_time_ms
        for size in sizes_ms:
            start = t - t % size
            if start + size + grace_ms <= watermark.get(part, t):
                late += 1
                continue
            for category, score in p.top_categories:
                cell = cells.setdefault((size // 1000, start, part, category), [0.0, 0.0, 0, set()])
                cell[0] += score
                cell[1] += p.purchase_probability * score
                cell[2] += 1
                cell[3].add(p.user_id)
        watermark[part] = max(watermark.get(part, t), t)
    closed = {k: v for k, v in cells.items() if k[1] + k[0] * 1000 + grace_ms <= watermark[k[2]]}
    return closed, late


@settings(max_examples=150, deadline=None)
@given(st.lists(timed, max_size=80), st.randoms(), st.sampled_from([(60, 120), (60, 180, 90), (30,)]))
def test_closed_windows_follow_the_plain_rule_however_the_predictions_are_batched(
        items: list, rng: random.Random, sizes: tuple[int, ...]) -> None:
    made = [(part, prediction(user, BASE + t, tuple(cats), p)) for part, user, t, cats, p in items]

    def run(splits: list[int]) -> tuple[list, DemandAggregator]:
        agg = aggregator(sizes=sizes, grace_s=5)
        records, at = [], 0
        for cut in [*splits, len(made)]:
            agg.add(made[at:cut])
            records += agg.close_ready()
            at = cut
        return records, agg

    one, agg = run([])
    cuts = sorted(rng.sample(range(len(made) + 1), min(len(made), 5)))
    order = lambda r: (r.window_size_s, r.window_start_ms, r.partition, r.category_id)  # noqa: E731
    # partitions close in their own order; sums of the same floats in another order may differ in the last bit
    batched, whole = sorted(run(cuts)[0], key=order), sorted(one, key=order)
    assert [dataclasses.replace(r, expected_visits=0.0, expected_purchases=0.0) for r in batched] == \
        [dataclasses.replace(r, expected_visits=0.0, expected_purchases=0.0) for r in whole]
    for a, b in zip(batched, whole):
        assert (a.expected_visits, a.expected_purchases) == (pytest.approx(b.expected_visits, rel=1e-12),
                                                             pytest.approx(b.expected_purchases, rel=1e-12))
    expected, late = reference(made, tuple(s * 1000 for s in sizes), 5_000)
    got = {(r.window_size_s, r.window_start_ms, r.partition, r.category_id): r for r in one}
    assert got.keys() == expected.keys()
    for key, r in got.items():
        visits, purchases, count, users = expected[key]
        assert (r.expected_visits, r.expected_purchases) == (pytest.approx(visits), pytest.approx(purchases))
        assert (r.predictions, r.distinct_users) == (count, len(users))
    assert agg.counters.late == late


def test_a_record_round_trips_through_its_avro_contract() -> None:
    agg = aggregator()
    agg.add([(2, prediction("u1", BASE + 1_000, (("cat-1", 0.5),), 0.25)),
             (2, prediction("u1", BASE + 90_000, (("cat-1", 0.5),), 0.25))])
    (record,) = agg.close_ready()
    codec = RecordCodec(CategoryDemand)
    assert codec.decode(codec.encode(record)) == record
    assert record.key == b"cat-1" and record.window_end_ms == BASE + 60_000
