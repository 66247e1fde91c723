"""Which offsets of the clicks topics the agent handled, and what the worker commits for its consumer group.

The worker commits its own offsets instead of Faust's consumer (the source topics are declared with
``acks=False``, so Faust never commits them). Faust's bookkeeping could commit past offsets that never reached
the agent, or stop committing for good after one (its head-of-partition check is off by one, and a revocation
drops its acknowledgements while a batch is still in flight). Here, per partition of the current assignment:

- the agent's arrivals are sorted (:meth:`Ledger.sort`): the next expected offset is handled; an offset the
  agent has handled already in this assignment (a seek back) is dropped; an offset past the expected one
  reveals a hole, which the agent reads from the log (streams/holes.py); a partition not assigned any more is
  dropped (its new owner reads it from the committed offset);
- what a delivered batch handled (its records handed to the producer) moves the partition's commit position
  (:meth:`Ledger.delivered`): always contiguous from the committed offset, so a commit never passes an offset
  that was not handled;
- :meth:`Ledger.to_commit` gives the positions to commit once the producer has flushed (streams/agents.py).

A new consumer group generation starts every partition afresh from its committed offset.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

TopicPartition = tuple[str, int]


@dataclasses.dataclass
class Arrival:
    """A batch sorted on arrival: the indices of the messages to handle, the holes before some of them (partition,
    first missing offset, the offset that revealed it), and how many were dropped as handled or not ours."""

    keep: list[int]
    holes: list[tuple[TopicPartition, int, int]]
    again: int = 0
    foreign: int = 0


@dataclasses.dataclass
class Ledger:
    generation: int | None = None
    # per partition of the current assignment, once it has been seen in it
    expected: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)  # the next offset to handle
    handled: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)  # the offset after the last delivered
    committed: dict[TopicPartition, int | None] = dataclasses.field(default_factory=dict)  # the group's, as known

    def sort(self, offsets: Iterable[tuple[str, int, int]], generation: int | None,
             assigned: Iterable[TopicPartition], committed: Mapping[TopicPartition, int | None]) -> Arrival:
        """Sort a batch's (topic, partition, offset)s as it arrives in ``generation``, with the worker's
        ``assigned`` partitions and the group's ``committed`` offsets from the assignment's seek (read for a
        partition's first message in a generation; None: no committed offset, the first message sets the start)."""
        if generation != self.generation:
            self.start(generation)
        mine = set(assigned)
        arrival = Arrival([], [])
        for i, (topic, partition, offset) in enumerate(offsets):
            tp = (topic, partition)
            if tp not in mine:
                arrival.foreign += 1
                continue
            if tp not in self.committed:
                self.committed[tp] = committed.get(tp)
                if self.committed[tp] is not None:
                    self.expected[tp] = self.handled[tp] = self.committed[tp]
            expected = self.expected.get(tp)
            if expected is not None and offset < expected:
                arrival.again += 1
                continue
            if expected is not None and offset > expected:
                arrival.holes.append((tp, expected, offset))
            if expected is None:
                self.handled[tp] = offset
            self.expected[tp] = offset + 1
            arrival.keep.append(i)
        return arrival

    def start(self, generation: int | None) -> None:
        """A new assignment (or none, ``generation`` None, while the group rebalances): nothing is known yet."""
        self.generation = generation
        self.expected.clear()
        self.handled.clear()
        self.committed.clear()

    def delivered(self, generation: int | None, offsets: Iterable[tuple[str, int, int]]) -> None:
        """A batch sorted in ``generation`` is delivered: its offsets (kept ones and holes read from the log,
        contiguous per partition) may be committed once the producer has flushed."""
        if generation != self.generation:
            return  # a batch of an earlier assignment: its partitions start from their committed offsets again
        for topic, partition, offset in offsets:
            tp = (topic, partition)
            if tp in self.handled:
                self.handled[tp] = max(self.handled[tp], offset + 1)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit (the one after the last delivered), where it moved past the
        committed one."""
        return {tp: position for tp, position in self.handled.items()
                if self.committed.get(tp) is None or position > self.committed[tp]}

    def did_commit(self, generation: int | None, offsets: Mapping[TopicPartition, int]) -> None:
        if generation == self.generation:
            self.committed.update({tp: offset for tp, offset in offsets.items() if tp in self.committed})

    def known_committed(self) -> dict[TopicPartition, int | None]:
        return dict(self.committed)

    def describe(self) -> str:
        """Per partition seen in this generation: the next expected offset, the offset after the last delivered,
        the committed one (for the log)."""
        return f"generation {self.generation}: " + (", ".join(
            f"{topic}[{partition}] next {self.expected.get((topic, partition))} delivered "
            f"{self.handled.get((topic, partition))} committed {committed}"
            for (topic, partition), committed in sorted(self.committed.items())) or "no partition seen")
