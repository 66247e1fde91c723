"""Notice a worker that has clicks to handle and handles none: the liveness failure Faust workers are known
for (faust-streaming issue #175 and alike: after a rebalance a worker stays in the group, alive, without
errors, and stops processing).

:class:`ProgressWatch` is told every handled batch's offsets and asked, every few seconds, whether the worker
is stalled: no batch for ``timeout_s`` while an assigned partition's end offset is beyond what this worker
has handled or what its group has committed. An idle worker (nothing behind) is never stalled. The agent's
timer (``streams.agents.watch_progress``) then dumps what every task was doing and ends the process, so that
its supervisor restarts it and the clicks are read again from the committed offsets (at least once).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping

TopicPartition = tuple[str, int]


@dataclasses.dataclass
class ProgressWatch:
    timeout_s: float
    last_progress: float = dataclasses.field(default_factory=time.monotonic)
    handled: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)  # next offset, per partition

    def batch_handled(self, offsets: Iterable[tuple[str, int, int]], now: float | None = None) -> None:
        """A batch of messages (topic, partition, offset) was handled."""
        for topic, partition, offset in offsets:
            tp = (topic, partition)
            if offset + 1 > self.handled.get(tp, -1):
                self.handled[tp] = offset + 1
        self.last_progress = time.monotonic() if now is None else now

    def not_watching(self, now: float | None = None) -> None:
        """Starting, rebalancing or recovering tables: the clock starts again when that is over."""
        self.last_progress = time.monotonic() if now is None else now

    def behind(self, ends: Mapping[TopicPartition, int],
               committed: Mapping[TopicPartition, int | None]) -> dict[TopicPartition, tuple[int, int]]:
        """The partitions whose end offset is beyond both the offset handled here and the group's committed
        one: (done, end) per partition."""
        late = {}
        for tp, end in ends.items():
            done = max(self.handled.get(tp, 0), committed.get(tp) or 0)
            if end > done:
                late[tp] = (done, end)
        return late

    def stalled(self, ends: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None],
                now: float | None = None) -> dict[TopicPartition, tuple[int, int]]:
        """The partitions left behind when no batch was handled for ``timeout_s`` (else an empty dict)."""
        now = time.monotonic() if now is None else now
        late = self.behind(ends, committed)
        if not late:
            self.last_progress = now  # idle is healthy
            return {}
        if self.timeout_s <= 0 or now - self.last_progress < self.timeout_s:
            return {}
        return late

    def forget(self, keep: Iterable[TopicPartition]) -> None:
        """Drop what was handled on partitions no longer assigned (another worker may handle them meanwhile)."""
        kept = set(keep)
        self.handled = {tp: offset for tp, offset in self.handled.items() if tp in kept}
