"""Category demand: predicted next-category intent summed over tumbling event-time windows, free of Faust.

Each micro-batch's predictions are fed to :class:`DemandAggregator` with the partition of the click they
follow. Per source partition and window size it keeps the open windows in memory; per window and category:
expected visits (the sum of the category's scores over the top-k categories of each prediction), the exact
set of users, and expected purchases (purchase probability x score). A partition's watermark is the newest
event time it has seen; a window closes once the watermark reaches its end plus the grace period, and a
prediction for a window that is already past that point is late: counted, not added.

State is per partition because users, and so their clicks, are partitioned: a window's demand is the sum of
its records over all partitions. It lives in memory only. After the worker starts or is given a partition,
it cannot know what it did not see, so a window is ``complete`` only when it starts at least ``grace`` after
the first click the worker saw on that partition (assuming no click arrives more than the grace period
behind an earlier click of its partition).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

from core.derived_records import CategoryDemand
from core.records import Prediction

# per category: [expected visits, expected purchases, predictions, users]
Cell = list  # [float, float, int, set[str]]


@dataclasses.dataclass
class PartitionWindows:
    """The open windows of one source partition: window size (ms) -> window start (ms) -> category -> cell."""

    first_event_ms: int
    watermark_ms: int
    open: dict[int, dict[int, dict[str, Cell]]]


@dataclasses.dataclass
class DemandCounters:
    predictions: int = 0
    late: int = 0  # (prediction, window size) pairs that came after their window closed: not counted
    closed: int = 0  # records of closed windows (one per window, category and partition)


class DemandAggregator:
    """Open tumbling windows per source partition and window size; closed windows out as records.

    Only the smallest window size is updated per prediction. A size that is a multiple of it (an hour of
    minutes) receives each small window's cells when that window closes, and a prediction too late for its
    small window but not for the larger one is added to the larger one directly: the sums are those of
    per-prediction updates, at a fraction of the cost. Other sizes are updated per prediction.
    """

    def __init__(self, sizes_s: Iterable[int], grace_s: int, partitions: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.sizes_ms = tuple(sorted({int(s) * 1000 for s in sizes_s}))
        self.base_ms = self.sizes_ms[0]
        self.merged_ms = tuple(s for s in self.sizes_ms[1:] if s % self.base_ms == 0)
        self.direct_ms = tuple(s for s in self.sizes_ms[1:] if s % self.base_ms)
        self.grace_ms = grace_s * 1000
        self.partitions = partitions
        self.clock = clock
        self.by_partition: dict[int, PartitionWindows] = {}
        self.counters = DemandCounters()

    def add(self, made: Iterable[tuple[int, Prediction]]) -> None:
        """Count predictions, each with the source partition of its click, in batch order."""
        base, direct, grace, counters = self.base_ms, self.direct_ms, self.grace_ms, self.counters
        by_partition = self.by_partition
        for partition, p in made:
            t = p.event_time_ms
            state = by_partition.get(partition)
            if state is None:
                state = by_partition[partition] = PartitionWindows(t, t, {size: {} for size in self.sizes_ms})
            watermark = state.watermark_ms
            counters.predictions += 1
            start = t - t % base
            if start + base + grace > watermark:
                _count(state.open[base], start, p)
            else:
                counters.late += 1
                self._add_late(state, p)
            for size in direct:
                start = t - t % size
                if start + size + grace > watermark:
                    _count(state.open[size], start, p)
                else:
                    counters.late += 1
            if t > watermark:
                state.watermark_ms = t

    def _add_late(self, state: PartitionWindows, p: Prediction) -> None:
        """A prediction too late for its smallest window may still be in time for the larger ones."""
        t = p.event_time_ms
        for size in self.merged_ms:
            start = t - t % size
            if start + size + self.grace_ms > state.watermark_ms:
                _count(state.open[size], start, p)
            else:
                self.counters.late += 1

    def close_ready(self) -> list[CategoryDemand]:
        """Records of the windows whose end plus grace the watermark of their partition has reached."""
        closed: list[CategoryDemand] = []
        now_ms = int(self.clock() * 1000)
        for partition, state in self.by_partition.items():
            complete_from = state.first_event_ms + self.grace_ms
            for size, windows in state.open.items():  # smallest first: larger windows receive its cells
                ready = [start for start in windows if start + size + self.grace_ms <= state.watermark_ms]
                for start in sorted(ready):
                    cells = windows.pop(start)
                    if size == self.base_ms:
                        for larger in self.merged_ms:
                            _merge(state.open[larger], start - start % larger, cells)
                    closed.extend(
                        CategoryDemand(category_id=category, window_size_s=size // 1000, window_start_ms=start,
                                       expected_visits=cell[0], distinct_users=len(cell[3]),
                                       expected_purchases=cell[1], predictions=cell[2], partition=partition,
                                       partitions=self.partitions, complete=start >= complete_from,
                                       closed_at_ms=now_ms)
                        for category, cell in sorted(cells.items()))
        self.counters.closed += len(closed)
        return closed

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Drop the state of partitions this worker no longer owns (another worker counts them now); a
        partition given back later starts afresh, its open windows incomplete."""
        keep = set(partitions)
        for partition in [p for p in self.by_partition if p not in keep]:
            del self.by_partition[partition]

    def open_windows(self) -> int:
        return sum(len(w) for state in self.by_partition.values() for w in state.open.values())


def _count(windows: dict[int, dict[str, Cell]], start: int, p: Prediction) -> None:
    cells = windows.get(start)
    if cells is None:
        cells = windows[start] = {}
    purchase, user = p.purchase_probability, p.user_id
    for category, score in p.top_categories:
        cell = cells.get(category)
        if cell is None:
            cells[category] = [score, purchase * score, 1, {user}]
        else:
            cell[0] += score
            cell[1] += purchase * score
            cell[2] += 1
            cell[3].add(user)


def _merge(windows: dict[int, dict[str, Cell]], start: int, cells: dict[str, Cell]) -> None:
    into = windows.get(start)
    if into is None:
        into = windows[start] = {}
    for category, cell in cells.items():
        target = into.get(category)
        if target is None:
            into[category] = [cell[0], cell[1], cell[2], set(cell[3])]
        else:
            target[0] += cell[0]
            target[1] += cell[1]
            target[2] += cell[2]
            target[3] |= cell[3]
