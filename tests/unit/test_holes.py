"""Placing the records of a hole (offsets Faust never handed to the agent) into the batch that revealed it."""
from __future__ import annotations

from streams.batch import Message
from streams.holes import with_filled


def message(partition: int, offset: int) -> Message:
    return Message(b"u", f"{partition}:{offset}".encode(), "clicks", partition, offset, 0.0)


def test_a_hole_is_filled_right_before_the_message_that_revealed_it_and_stands_for_it() -> None:
    batch = [message(0, 10), message(1, 5), message(0, 14), message(1, 9), message(0, 15)]
    filled = [(("clicks", 0), 14, [message(0, 11), message(0, 13)]),  # 12: no record (a commit marker)
              (("clicks", 1), 9, [])]  # a hole without records changes nothing
    merged, origin = with_filled(batch, filled)
    assert [(m.partition, m.offset) for m in merged] == [(0, 10), (1, 5), (0, 11), (0, 13), (0, 14), (1, 9), (0, 15)]
    # each read record stands for the message that revealed its hole (same partition); the others for themselves
    assert origin == [0, 1, 2, 2, 2, 3, 4]
    assert all(merged[i].partition == batch[j].partition for i, j in enumerate(origin))


def test_without_holes_the_batch_is_unchanged() -> None:
    batch = [message(0, 1), message(0, 2)]
    assert with_filled(batch, []) == (batch, [0, 1])
