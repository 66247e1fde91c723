"""The ledger (streams/ledger.py): arrivals sorted per assignment, and commits that never pass an offset the
agent did not handle."""
from __future__ import annotations

from streams.ledger import Ledger

A, B = ("clicks", 0), ("clicks", 1)
BOTH = {A, B}


def offsets(tp: tuple[str, int], *numbers: int) -> list[tuple[str, int, int]]:
    return [(tp[0], tp[1], n) for n in numbers]


def test_a_partition_starts_at_its_committed_offset_and_commits_what_was_delivered() -> None:
    ledger = Ledger()
    arrival = ledger.sort(offsets(A, 800, 801, 802), 3, BOTH, {A: 800})
    assert arrival.keep == [0, 1, 2] and arrival.holes == []
    assert ledger.to_commit() == {}  # nothing delivered yet
    ledger.delivered(3, offsets(A, 800, 801, 802))
    assert ledger.to_commit() == {A: 803}
    ledger.did_commit(3, {A: 803})
    assert ledger.to_commit() == {}


def test_skipped_offsets_are_holes_and_re_read_offsets_are_dropped() -> None:
    ledger = Ledger()
    # the first batch of an assignment starts after the committed offset: 800..999 never reached the agent
    arrival = ledger.sort(offsets(A, 1_000, 1_001), 3, BOTH, {A: 800})
    assert arrival.holes == [(A, 800, 1_000)] and arrival.keep == [0, 1]
    # one offset is a hole too (it may be a transaction's commit marker: the log tells, streams/holes.py)
    assert ledger.sort(offsets(A, 1_003), 3, BOTH, {A: 800}).holes == [(A, 1_002, 1_003)]
    # a seek back: offsets handled already in this assignment are dropped, the next one is kept
    arrival = ledger.sort(offsets(A, 900, 1_003, 1_004), 3, BOTH, {A: 800})
    assert arrival.keep == [2] and arrival.again == 2 and arrival.holes == []


def test_the_commit_waits_for_the_hole_s_records_to_be_delivered() -> None:
    ledger = Ledger()
    ledger.sort(offsets(A, 10, 11), 1, BOTH, {A: 5})  # 5..9 read from the log and delivered in this batch
    assert ledger.to_commit() == {}  # the committed offset stays at 5 until the batch is delivered
    ledger.delivered(1, offsets(A, 5, 6, 7, 8, 9, 10, 11))
    assert ledger.to_commit() == {A: 12}


def test_a_partition_without_a_committed_offset_starts_at_its_first_message() -> None:
    ledger = Ledger()
    arrival = ledger.sort(offsets(B, 7, 8), 1, BOTH, {B: None})
    assert arrival.keep == [0, 1] and arrival.holes == []
    ledger.delivered(1, offsets(B, 7, 8))
    assert ledger.to_commit() == {B: 9}


def test_messages_of_partitions_not_assigned_are_dropped() -> None:
    ledger = Ledger()
    arrival = ledger.sort(offsets(A, 1) + offsets(B, 1), 2, {A}, {A: 1, B: 1})
    assert arrival.keep == [0] and arrival.foreign == 1
    ledger.delivered(2, offsets(A, 1))
    assert ledger.to_commit() == {A: 2}


def test_a_new_generation_starts_every_partition_from_its_committed_offset_again() -> None:
    ledger = Ledger()
    ledger.sort(offsets(A, 10, 11), 1, BOTH, {A: 10})
    # another worker handled up to 500 meanwhile, and the partition came back
    arrival = ledger.sort(offsets(A, 500), 2, BOTH, {A: 500})
    assert arrival.keep == [0] and arrival.holes == []
    # a batch of the old generation delivered late commits nothing: its partitions start afresh
    ledger.delivered(1, offsets(A, 10, 11))
    assert ledger.to_commit() == {}
    ledger.delivered(2, offsets(A, 500))
    assert ledger.to_commit() == {A: 501}


def test_after_a_revocation_nothing_is_committed_until_the_next_assignment() -> None:
    ledger = Ledger()
    ledger.sort(offsets(A, 3), 4, BOTH, {A: 3})
    ledger.start(None)  # the group rebalances
    ledger.delivered(4, offsets(A, 3))
    assert ledger.to_commit() == {}
    assert ledger.known_committed() == {}
