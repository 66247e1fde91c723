"""The progress watch (streams/watchdog.py): stalled only with clicks waiting and no batch for the timeout."""
from __future__ import annotations

from streams.watchdog import ProgressWatch

A, B = ("clicks", 0), ("clicks", 1)


def test_a_worker_with_clicks_waiting_and_no_batch_for_the_timeout_is_stalled() -> None:
    watch = ProgressWatch(timeout_s=60, last_progress=0.0)
    watch.batch_handled([("clicks", 0, 9), ("clicks", 0, 7), ("clicks", 1, 3)], now=100.0)
    assert watch.handled == {A: 10, B: 4}
    ends = {A: 10, B: 20}
    assert watch.stalled(ends, {}, now=159.0) == {}  # behind, but not for long
    assert watch.stalled(ends, {}, now=160.0) == {B: (4, 20)}


def test_an_idle_worker_is_never_stalled_and_its_clock_restarts() -> None:
    watch = ProgressWatch(timeout_s=60, last_progress=0.0)
    # nothing handled here since the start, everything committed before: nothing to do
    assert watch.stalled({A: 50, B: 0}, {A: 50, B: None}, now=1_000.0) == {}
    # clicks arrive: the clock runs from the last idle check, not from the start
    assert watch.stalled({A: 51}, {A: 50}, now=1_059.0) == {}
    assert watch.stalled({A: 51}, {A: 50}, now=1_060.0) == {A: (50, 51)}


def test_the_committed_offset_counts_as_done_and_a_batch_resets_the_clock() -> None:
    watch = ProgressWatch(timeout_s=60, last_progress=0.0)
    watch.batch_handled([("clicks", 0, 4)], now=10.0)
    assert watch.behind({A: 30}, {A: 30}) == {}  # another worker handled up to 30 before this one got A
    assert watch.stalled({A: 31}, {A: 30}, now=69.0) == {}
    watch.batch_handled([("clicks", 0, 30)], now=69.5)
    assert watch.stalled({A: 40}, {A: 30}, now=129.0) == {}
    assert watch.stalled({A: 40}, {A: 30}, now=129.5) == {A: (31, 40)}


def test_starting_or_recovering_holds_the_clock_and_revoked_partitions_are_forgotten() -> None:
    watch = ProgressWatch(timeout_s=60, last_progress=0.0)
    watch.batch_handled([("clicks", 0, 4), ("clicks", 1, 4)], now=0.0)
    watch.not_watching(now=500.0)
    assert watch.stalled({A: 9}, {}, now=559.0) == {}
    watch.forget([A])
    assert watch.handled == {A: 5}


def test_a_timeout_of_zero_never_stalls() -> None:
    watch = ProgressWatch(timeout_s=0, last_progress=0.0)
    assert watch.stalled({A: 9}, {}, now=10_000.0) == {}
