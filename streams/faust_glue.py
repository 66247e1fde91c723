"""The worker's dependencies on Faust internals, isolated here and pinned by tests/unit/test_faust_glue.py.

1. ``faust.streams._current_event`` (private): Faust's RocksDB store files a table write under the partition
   of the *current event*, which a micro-batch does not have. :func:`current_event_of` makes it the user's
   own click for the duration of a write, which is what ``Stream`` itself does per event.
2. Message reference counts (public ``Message.incref``): ``Stream.take_events`` acknowledges a batch's
   messages when the batch ends, even when handling it failed. :func:`held` takes one more reference per
   message and gives it back only when the batch was handled, so a failed or cancelled batch is never
   acknowledged: its offsets are not committed and a restarted worker reads it again.
3. The app producer's aiokafka producer (``Producer._ensure_producer``, private): :func:`send_in_batches`
   builds one record batch per partition with aiokafka's compiled batch builder instead of one Faust send
   per message. Faust flushes this same producer before it commits offsets, so delivery is unchanged.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from faust.streams import _current_event


@contextlib.contextmanager
def current_event_of(event: Any | None) -> Iterator[None]:
    """Within the block, Faust's current event is ``event`` (None: no event, so that a table deletes a key
    by its own partition rather than by the partition of whatever event the stream last saw)."""
    token = _current_event.set(weakref.ref(event) if event is not None else None)
    try:
        yield
    finally:
        _current_event.reset(token)


@contextlib.contextmanager
def held(events: Sequence[Any]) -> Iterator[None]:
    """Keep the events' messages unacknowledged unless the block completes."""
    for event in events:
        event.message.incref()
    yield  # an exception (or cancellation) leaves the extra reference in place: no acknowledgement
    for event in events:
        event.message.decref()


async def send_in_batches(faust_producer: Any, topic: str, messages: Sequence[Any],
                          on_failure: Callable[[BaseException], None]) -> None:
    """Send ``messages`` (``.key``, ``.value``, ``.headers``) to ``topic``: one record batch per partition.

    Keyed messages go where Kafka's default partitioner puts them (murmur2 of the key, as the Java client
    and aiokafka do), unkeyed ones round-robin. ``on_failure`` is called if a batch is not delivered.
    """
    from aiokafka.partitioner import murmur2

    producer = faust_producer._ensure_producer()
    partitions = sorted(await producer.partitions_for(topic))
    n = len(partitions)
    by_partition: dict[int, list[Any]] = {}
    for i, m in enumerate(messages):
        p = partitions[(murmur2(m.key) & 0x7FFFFFFF) % n] if m.key is not None else partitions[i % n]
        by_partition.setdefault(p, []).append(m)

    def check(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            on_failure(fut.exception())

    for partition, group in by_partition.items():
        batch = producer.create_batch()
        for m in group:
            if batch.append(timestamp=None, key=m.key, value=m.value, headers=list(m.headers)) is None:  # full
                batch.close()
                (await producer.send_batch(batch, topic, partition=partition)).add_done_callback(check)
                batch = producer.create_batch()
                if batch.append(timestamp=None, key=m.key, value=m.value, headers=list(m.headers)) is None:
                    raise ValueError(f"a message of {len(m.value)} bytes does not fit in a record batch")
        batch.close()
        (await producer.send_batch(batch, topic, partition=partition)).add_done_callback(check)
