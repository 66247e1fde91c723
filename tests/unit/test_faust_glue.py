"""Pins the Faust internals the worker relies on (streams/faust_glue.py): if Faust changes them, this fails."""
from __future__ import annotations

import faust.streams
import faust.transport.drivers.aiokafka
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


def test_send_in_batches_puts_each_key_where_kafkas_partitioner_does() -> None:
    import asyncio
    from dataclasses import dataclass

    from kafka.partitioner import murmur2 as java_compatible_murmur2

    from streams.faust_glue import send_in_batches

    @dataclass
    class Out:
        key: bytes | None
        value: bytes
        headers: tuple = ()

    class Batch:
        def __init__(self) -> None:
            self.records: list = []

        def append(self, *, timestamp: object, key: bytes | None, value: bytes, headers: list) -> object:
            self.records.append((key, value, headers))
            return object()

        def close(self) -> None:
            pass

    class AioProducer:
        sent: list = []

        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1, 2, 3}

        def create_batch(self) -> Batch:
            return Batch()

        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
            self.sent.append((topic, partition, batch.records))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    class FaustProducer:
        def _ensure_producer(self) -> AioProducer:  # the private accessor the glue relies on
            return AioProducer()

    assert hasattr(faust.transport.drivers.aiokafka.Producer, "_ensure_producer")
    messages = [Out(f"user-{i}".encode(), b"v") for i in range(50)] + [Out(None, b"dead", (("reason", b"x"),))]
    asyncio.run(send_in_batches(FaustProducer(), "predictions", messages, lambda exc: None))
    placed = {key: partition for _, partition, records in AioProducer.sent for key, _, _ in records}
    for i in range(50):
        key = f"user-{i}".encode()
        assert placed[key] == (java_compatible_murmur2(key) & 0x7FFFFFFF) % 4
    assert sum(len(records) for _, _, records in AioProducer.sent) == 51
    assert len(AioProducer.sent) <= 4  # one batch per partition
