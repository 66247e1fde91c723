"""The progress watch (streams/watchdog.py): stalled only while the committed offset stays behind the end,
unmoved, for the timeout; skipped offsets are named."""
from __future__ import annotations

from streams.watchdog import ProgressWatch

A, B = ("clicks", 0), ("clicks", 1)


def test_a_commit_that_stays_behind_for_the_timeout_is_a_stall() -> None:
    watch = ProgressWatch(timeout_s=60)
    ends = {A: 10, B: 20}
    assert watch.stalled(ends, {A: 10, B: 4}, now=100.0) == {}  # the clock of B starts
    assert watch.stalled(ends, {A: 10, B: 4}, now=159.0) == {}
    assert watch.stalled(ends, {A: 10, B: 4}, now=160.0) == {B: (4, 20)}  # A is idle: never late


def test_a_moving_commit_restarts_the_clock_even_when_always_behind() -> None:
    watch = ProgressWatch(timeout_s=60)
    for i, now in enumerate(range(0, 600, 50)):  # overloaded: always behind, but committing
        assert watch.stalled({A: 10_000 + i * 100}, {A: i * 50}, now=float(now)) == {}


def test_a_partition_without_a_committed_offset_waits_from_when_it_was_first_seen() -> None:
    watch = ProgressWatch(timeout_s=60)
    assert watch.stalled({A: 5}, {A: None}, now=1_000.0) == {}
    assert watch.stalled({A: 5}, {A: None}, now=1_060.0) == {A: (0, 5)}


def test_starting_or_recovering_holds_the_clocks_and_revoked_partitions_are_dropped() -> None:
    watch = ProgressWatch(timeout_s=60)
    assert watch.stalled({A: 9, B: 9}, {A: 1, B: 1}, now=0.0) == {}
    watch.not_watching()
    assert watch.stalled({A: 9}, {A: 1}, now=500.0) == {}
    assert watch.stalled({A: 9}, {A: 1}, now=559.0) == {}
    assert set(watch.since) == {A}
    assert ProgressWatch(timeout_s=0).stalled({A: 9}, {A: 1}, now=10_000.0) == {}


def test_offsets_a_batch_skips_are_named_as_it_arrives() -> None:
    watch = ProgressWatch(timeout_s=60)
    # the first batch of an assignment starts after the committed offset: 800..999 were skipped
    assert watch.arrived([("clicks", 0, 1_000), ("clicks", 0, 1_001)], {A: 800}, generation=3) == [(A, 800, 1_000)]
    assert watch.arrived([("clicks", 0, 1_002), ("clicks", 0, 1_005)], {A: 800}, generation=3) == [(A, 1_003, 1_005)]
    # one offset is a hole too (it may be a transaction's commit marker: the log tells, streams/holes.py)
    assert watch.arrived([("clicks", 0, 1_007)], {A: 800}, generation=3) == [(A, 1_006, 1_007)]
    # re-read offsets (a seek back) are not a hole; no committed offset: the first batch is not judged
    assert watch.arrived([("clicks", 0, 900), ("clicks", 1, 7)], {A: 800, B: None}, generation=3) == []
    assert watch.arrived([("clicks", 1, 8), ("clicks", 0, 1_008)], {}, generation=3) == []


def test_a_new_generation_judges_each_partition_from_its_committed_offset_again() -> None:
    watch = ProgressWatch(timeout_s=60)
    assert watch.arrived([("clicks", 0, 10)], {A: 10}, generation=1) == []
    # another worker handled up to 500 meanwhile, and the partition came back
    assert watch.arrived([("clicks", 0, 500)], {A: 500}, generation=2) == []
