"""Pins the Faust internals the worker relies on (streams/faust_glue.py): if Faust changes them, this fails."""
from __future__ import annotations

import faust.streams
import pytest
from faust.types import TP
from faust.types import Message as FaustMessage

from streams.faust_glue import current_event_of, held


class Event:
    def __init__(self, message: FaustMessage) -> None:
        self.message = message


class Consumer:
    acked: list[int] = []


def faust_message(offset: int) -> FaustMessage:
    return FaustMessage("clicks", 0, offset, 0.0, 0, None, b"k", b"v", None, tp=TP("clicks", 0))


def test_current_event_is_what_the_table_store_reads() -> None:
    event = Event(faust_message(1))
    assert faust.streams.current_event() is None
    with current_event_of(event):
        assert faust.streams.current_event() is event  # what the RocksDB store asks for a key's partition
        with current_event_of(None):
            assert faust.streams.current_event() is None
    assert faust.streams.current_event() is None


def test_held_messages_are_acknowledged_only_when_the_batch_completes() -> None:
    done, failed = Event(faust_message(1)), Event(faust_message(2))
    for event in (done, failed):
        event.message.incref()  # the stream's own reference, given back by take_events when a batch ends
    with held([done]):
        pass
    with pytest.raises(RuntimeError), held([failed]):
        raise RuntimeError("batch failed")
    # take_events then acks every event of the batch: only the completed one reaches a final ack
    assert done.message.ack(Consumer()) is True and done.message.acked
    assert failed.message.ack(Consumer()) is False and not failed.message.acked
