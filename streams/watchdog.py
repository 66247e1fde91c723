"""Notice a worker whose group commits stop while clicks wait, and offsets that never reached the agent.

Faust workers are known to stop processing after a rebalance, alive and without errors (faust-streaming issue
#175 and alike). Not root-caused (README: known issues); this module turns it into a restart and names the
offsets a batch skips.

:class:`ProgressWatch` is told the committed and end offsets of the worker's partitions every few seconds and
reports the partitions whose committed offset has not moved for ``timeout_s`` while it is behind the end: then
the agent's timer (``streams.agents.watch_progress``) dumps what every task was doing and ends the process, for
its supervisor to restart it (at least once: nothing after the committed offset is lost). An idle partition
(committed at the end) is never stalled. :meth:`ProgressWatch.arrived` also names the offsets a batch skips
(holes): within an assignment a partition's clicks reach the agent in offset order, from its committed offset
on. A hole may hold no record (a transactional producer's commit marker takes an offset); the agent reads it
from the log to find out (streams/holes.py).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping

TopicPartition = tuple[str, int]


@dataclasses.dataclass
class ProgressWatch:
    timeout_s: float
    # per partition: the committed offset last seen and since when (monotonic seconds)
    since: dict[TopicPartition, tuple[int | None, float]] = dataclasses.field(default_factory=dict)
    # per partition: the next offset the agent should see (the one after the last it handled), this generation
    expected: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)
    generation: int | None = None

    def arrived(self, offsets: Iterable[tuple[str, int, int]], committed: Mapping[TopicPartition, int | None],
                generation: int | None = None) -> list[tuple[TopicPartition, int, int]]:
        """Note a batch's (topic, partition, offset)s, as it arrives; return the offsets it skips, as (partition,
        first skipped, first seen after them). A partition's first batch in a group generation (an assignment) is
        compared with its committed offset (when the group has one); re-read (older) offsets are never a hole."""
        if generation != self.generation:  # a rebalance: partitions may have moved on elsewhere meanwhile
            self.expected.clear()
            self.generation = generation
        holes = []
        for topic, partition, offset in offsets:
            tp = (topic, partition)
            expected = self.expected.get(tp, committed.get(tp))
            if expected is not None and offset > expected:
                holes.append((tp, expected, offset))
            if expected is None or offset >= expected:
                self.expected[tp] = offset + 1
        return holes

    def stalled(self, ends: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None],
                now: float | None = None) -> dict[TopicPartition, tuple[int, int]]:
        """The partitions (assigned: the keys of ``ends``) whose committed offset has stayed below their end
        offset, unchanged, for ``timeout_s``: (committed, end) per partition."""
        now = time.monotonic() if now is None else now
        late = {}
        for tp, end in ends.items():
            done = committed.get(tp)
            seen = self.since.get(tp)
            if seen is None or seen[0] != done or (done or 0) >= end:
                self.since[tp] = (done, now)  # moved, or nothing waiting: the clock starts again
            elif self.timeout_s > 0 and now - seen[1] >= self.timeout_s:
                late[tp] = (done or 0, end)
        for tp in set(self.since) - set(ends):  # revoked
            del self.since[tp]
        return late

    def not_watching(self) -> None:
        """Starting, rebalancing or recovering tables: every clock starts again afterwards."""
        self.since.clear()
