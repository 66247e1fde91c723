"""The ledger (streams/ledger.py): arrivals sorted per assignment, and commits that never pass an offset the
agent did not handle."""
from __future__ import annotations

from streams.ledger import Ledger

A, B = ("clicks", 0), ("clicks", 1)


def offsets(tp: tuple[str, int], *numbers: int) -> list[tuple[str, int, int]]:
    return [(tp[0], tp[1], n) for n in numbers]


def assigned(generation: int = 3, starts: dict | None = None, committed: dict | None = None) -> Ledger:
    ledger = Ledger()
    starts = starts if starts is not None else {A: 800, B: 0}
    ledger.assign(generation, starts, committed if committed is not None else dict(starts))
    return ledger


def test_a_partition_starts_where_assigned_and_commits_what_was_delivered() -> None:
    ledger = assigned()
    arrival = ledger.sort(offsets(A, 800, 801, 802), 3)
    assert arrival.keep == [0, 1, 2] and arrival.holes == []
    assert ledger.to_commit() == {}  # nothing delivered yet
    ledger.delivered(3, offsets(A, 800, 801, 802))
    assert ledger.to_commit() == {A: 803}
    ledger.did_commit(3, {A: 803})
    assert ledger.to_commit() == {}
    assert ledger.progress() == {A: 803, B: 0}


def test_skipped_offsets_are_holes_and_re_read_offsets_are_dropped() -> None:
    ledger = assigned()
    # the first batch of an assignment starts after the committed offset: 800..999 never reached the agent
    arrival = ledger.sort(offsets(A, 1_000, 1_001), 3)
    assert arrival.holes == [(A, 800, 1_000)] and arrival.keep == [0, 1]
    # one offset is a hole too (it may be a transaction's commit marker: the log tells, streams/holes.py)
    assert ledger.sort(offsets(A, 1_003), 3).holes == [(A, 1_002, 1_003)]
    # a seek back: offsets handled already in this assignment are dropped, the next one is kept
    arrival = ledger.sort(offsets(A, 900, 1_003, 1_004), 3)
    assert arrival.keep == [2] and arrival.again == 2 and arrival.holes == []


def test_the_commit_waits_for_the_hole_s_records_to_be_delivered() -> None:
    ledger = assigned(starts={A: 5}, committed={A: 5})
    ledger.sort(offsets(A, 10, 11), 3)  # 5..9 read from the log and delivered in this batch
    assert ledger.to_commit() == {}  # the committed offset stays at 5 until the batch is delivered
    ledger.delivered(3, offsets(A, 5, 6, 7, 8, 9, 10, 11))
    assert ledger.to_commit() == {A: 12}


def test_a_partition_without_a_committed_offset_starts_at_its_first_offset_in_the_log() -> None:
    """Records fetched before a rebalance may reach the agent first (offset 237 here): the ones before them are a
    hole, never skipped, because the partition starts where its log starts, not at the first message seen."""
    ledger = assigned(starts={B: 0}, committed={B: None})
    arrival = ledger.sort(offsets(B, 237, 238), 3)
    assert arrival.holes == [(B, 0, 237)]
    assert ledger.to_commit() == {}  # nothing delivered: no commit of where it started
    assert ledger.progress() == {B: 0}
    ledger.delivered(3, offsets(B, *range(239)))
    assert ledger.to_commit() == {B: 239}


def test_messages_of_partitions_not_assigned_or_of_another_generation_are_dropped() -> None:
    ledger = assigned(starts={A: 1})
    arrival = ledger.sort(offsets(A, 1) + offsets(B, 1), 3)
    assert arrival.keep == [0] and arrival.foreign == 1
    assert ledger.sort(offsets(A, 2), 2).foreign == 1  # taken before the assignment
    assert ledger.sort(offsets(A, 2), None).foreign == 1  # arriving while the flow is stopped
    ledger.delivered(3, offsets(A, 1))
    assert ledger.to_commit() == {A: 2}


def test_from_the_start_of_a_revocation_arrivals_are_dropped_but_the_batch_in_flight_is_committed() -> None:
    ledger = assigned(starts={A: 3})
    ledger.sort(offsets(A, 3), 3)  # in flight when the revocation begins
    ledger.stop_accepting()
    assert ledger.sort(offsets(A, 4), 3).foreign == 1  # taken after: left to the partition's next owner
    ledger.delivered(3, offsets(A, 3))
    assert ledger.to_commit() == {A: 4}


def test_after_a_revocation_nothing_is_kept_or_committed_until_the_next_assignment() -> None:
    ledger = assigned(starts={A: 3})
    ledger.sort(offsets(A, 3), 3)
    ledger.revoke()
    ledger.delivered(3, offsets(A, 3))  # a batch of the old assignment delivered late
    assert ledger.to_commit() == {} and ledger.progress() == {}
    assert ledger.sort(offsets(A, 4), 3).foreign == 1
    # another worker handled up to 500 meanwhile, and the partition came back
    ledger.assign(4, {A: 500}, {A: 500})
    assert ledger.sort(offsets(A, 500), 4).keep == [0]
    ledger.delivered(4, offsets(A, 500))
    assert ledger.to_commit() == {A: 501}
