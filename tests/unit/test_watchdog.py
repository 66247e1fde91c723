"""The progress watch (streams/watchdog.py): stalled only while the committed offset stays behind the end,
unmoved, for the timeout; how long each partition has waited is kept for the metric."""
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


def test_the_wait_of_each_partition_is_kept_for_the_metric() -> None:
    watch = ProgressWatch(timeout_s=0)  # the watchdog off: the wait is still measured
    watch.stalled({A: 10, B: 20}, {A: 10, B: 4}, now=100.0)
    assert watch.stalled({A: 10, B: 20}, {A: 10, B: 4}, now=130.0) == {}
    assert watch.waiting_s == {A: 0.0, B: 30.0}
    watch.stalled({A: 10}, {A: 10}, now=131.0)  # B revoked
    assert watch.waiting_s == {A: 0.0}
