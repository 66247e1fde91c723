"""A safety net: notice a worker whose group commits stop while clicks wait, and end it for a restart.

:class:`ProgressWatch` is told the committed and end offsets of the worker's partitions every few seconds and
reports the partitions whose committed offset has not moved for ``timeout_s`` while it is behind the end: then
the agent's timer (``streams.agents.watch_progress``) dumps what every task was doing and ends the process (exit
75), for its supervisor to restart it (at least once: nothing after the committed offset is lost). An idle
partition (committed at the end) is never stalled. Each such exit is a defect to look into: the worker commits
what it handled itself (streams/ledger.py), so a healthy worker never trips it.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

TopicPartition = tuple[str, int]


@dataclasses.dataclass
class ProgressWatch:
    timeout_s: float
    # per partition: the committed offset last seen and since when (monotonic seconds)
    since: dict[TopicPartition, tuple[int | None, float]] = dataclasses.field(default_factory=dict)
    # per partition: how long its committed offset has stood still while clicks wait, at the last check (0: none
    # wait); exported as a metric for alerts
    waiting_s: dict[TopicPartition, float] = dataclasses.field(default_factory=dict)

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
                self.waiting_s[tp] = 0.0
                continue
            self.waiting_s[tp] = now - seen[1]
            if self.timeout_s > 0 and now - seen[1] >= self.timeout_s:
                late[tp] = (done or 0, end)
        for tp in set(self.since) - set(ends):  # revoked
            del self.since[tp]
        for tp in set(self.waiting_s) - set(ends):
            del self.waiting_s[tp]
        return late

    def not_watching(self) -> None:
        """Starting, rebalancing or recovering tables: every clock starts again afterwards."""
        self.since.clear()
        self.waiting_s.clear()
