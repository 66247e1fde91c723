"""Which offsets of the clicks topics the agent handled, and what the worker commits for its consumer group.

The worker commits its own offsets instead of Faust's consumer (the source topics are declared with
``acks=False``, so Faust never commits them). Faust's bookkeeping could commit past offsets that never reached
the agent, or stop committing for good after one (its head-of-partition check is off by one, and a revocation
drops its acknowledgements while a batch is still in flight).

Per partition of the current assignment, the ledger knows where it starts (:meth:`Ledger.assign`: the group's
committed offset, or for a partition without one its first offset in the log, where the worker seeks it), then:

- the agent's arrivals are sorted (:meth:`Ledger.sort`): the next expected offset is handled; an offset the
  agent has handled already in this assignment (a seek back) is dropped; an offset past the expected one
  reveals a hole, which the agent reads from the log (streams/holes.py); a message of another assignment, of a
  partition not assigned, or arriving while the group rebalances is dropped (whoever owns its partition reads
  it from the committed offset);
- what a delivered batch handled (its records handed to the producer) moves the partition's commit position
  (:meth:`Ledger.delivered`): always contiguous from where the partition started, so a commit never passes an
  offset that was not handled;
- :meth:`Ledger.to_commit` gives the positions to commit once the producer has flushed (streams/agents.py).
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
    generation: int | None = None  # the assignment's consumer group generation; None: none (rebalancing)
    # per partition of the current assignment
    starts: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)  # where it started
    expected: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)  # the next offset to handle
    handled: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)  # the offset after the last delivered
    committed: dict[TopicPartition, int | None] = dataclasses.field(default_factory=dict)  # the group's, as known
    accepting: bool = True  # False from the start of a revocation: what arrives then is dropped

    def assign(self, generation: int | None, starts: Mapping[TopicPartition, int],
               committed: Mapping[TopicPartition, int | None]) -> None:
        """A new assignment: each partition starts at ``starts`` (its committed offset, or the first offset of its
        log when it has none), with the group's ``committed`` offsets (None: none yet)."""
        self.generation = generation
        self.accepting = True
        self.starts = dict(starts)
        self.expected = dict(starts)
        self.handled = dict(starts)
        self.committed = {tp: committed.get(tp) for tp in starts}

    def stop_accepting(self) -> None:
        """A revocation begins: batches in flight may still be delivered (and committed), but whatever arrives
        from now on is dropped, for the partitions' next owners to read from the committed offsets."""
        self.accepting = False

    def revoke(self) -> None:
        """The group rebalances: nothing is assigned until the next :meth:`assign`."""
        self.assign(None, {}, {})
        self.accepting = False

    def sort(self, offsets: Iterable[tuple[str, int, int]], generation: int | None) -> Arrival:
        """Sort a batch's (topic, partition, offset)s as it arrives, the group in ``generation`` (None: the flow
        is stopped for a rebalance)."""
        arrival = Arrival([], [])
        for i, (topic, partition, offset) in enumerate(offsets):
            tp = (topic, partition)
            expected = self.expected.get(tp)
            if generation is None or generation != self.generation or expected is None or not self.accepting:
                arrival.foreign += 1
            elif offset < expected:
                arrival.again += 1
            else:
                if offset > expected:
                    arrival.holes.append((tp, expected, offset))
                self.expected[tp] = offset + 1
                arrival.keep.append(i)
        return arrival

    def delivered(self, generation: int | None, offsets: Iterable[tuple[str, int, int]]) -> None:
        """A batch sorted in ``generation`` is delivered: its offsets (kept ones and holes read from the log,
        contiguous per partition) may be committed once the producer has flushed."""
        if generation is None or generation != self.generation:
            return  # a batch of an earlier assignment: its partitions start from their committed offsets again
        for topic, partition, offset in offsets:
            tp = (topic, partition)
            if tp in self.handled:
                self.handled[tp] = max(self.handled[tp], offset + 1)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit (the one after the last delivered), where it moved past the
        committed one (or, without one, past where the partition started)."""
        return {tp: position for tp, position in self.handled.items()
                if position > (self.committed[tp] if self.committed[tp] is not None else self.starts[tp])}

    def did_commit(self, generation: int | None, offsets: Mapping[TopicPartition, int]) -> None:
        if generation is not None and generation == self.generation:
            self.committed.update({tp: offset for tp, offset in offsets.items() if tp in self.committed})

    def progress(self) -> dict[TopicPartition, int]:
        """Per assigned partition, how far the group has got: the committed offset, else where it started."""
        return {tp: committed if committed is not None else self.starts[tp] for tp, committed in self.committed.items()}

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per assigned partition, the next offset the agent expects."""
        return dict(self.expected)

    def describe(self) -> str:
        """Per partition: where it started, the next expected offset, the offset after the last delivered, the
        committed one (for the log)."""
        return f"generation {self.generation}: " + (", ".join(
            f"{topic}[{partition}] start {self.starts[(topic, partition)]} next {self.expected[(topic, partition)]} "
            f"delivered {self.handled[(topic, partition)]} committed {committed}"
            for (topic, partition), committed in sorted(self.committed.items())) or "nothing assigned")
