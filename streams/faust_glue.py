"""The worker's dependencies on Faust internals, isolated here and pinned by tests/unit/test_faust_glue.py.

1. ``faust.streams._current_event`` (private): Faust's RocksDB store files a table write under the partition
   of the *current event*, which a micro-batch does not have. :func:`current_event_of` makes it the user's
   own click for the duration of a write, which is what ``Stream`` itself does per event.
2. Commits (``Consumer._thread.commit``, private; the ``App._on_partitions_revoked`` hook in streams/app.py): the
   clicks topics are declared with ``acks=False``, so Faust's consumer never commits them, and :func:`commit`
   commits the offsets the worker handled (streams/ledger.py) through Faust's consumer thread, which owns the
   aiokafka consumer.
3. The app producer's aiokafka producer (``Producer._ensure_producer``, private): :func:`send_in_batches`
   builds one record batch per partition with aiokafka's compiled batch builder instead of one Faust send
   per message. The worker flushes this same producer (``app.producer.flush()``) before it commits offsets.
4. A table's store and changelog (``Table.data``, the store's ``set_persisted_offset``, ``Table.changelog_topic``):
   :func:`write_table` writes the local store and sends the changelog records itself, through
   :func:`send_in_batches`, instead of ``table[key] = value``. Faust's own path queues each changelog record in
   its producer buffer, and the flush before a commit gives up after 0.1 s without a message leaving that buffer
   (``ProducerBuffer.flush_atmost``): under load a commit could pass records still queued, and a kill -9 then
   lost them while their clicks stayed committed (the changelog, which other workers recover from, missed the
   window). Records handed to aiokafka before the batch is committed are covered by the flush before the commit.
5. Where an assigned partition starts (``Consumer.seek_to_committed``, ``earliest_offsets`` and ``seek``, public
   methods of Faust's consumer): aiokafka's seek to the committed offsets skips a partition whose committed
   offset is missing or 0, which then goes on from wherever it was fetched to before the rebalance;
   ``streams.agents.start_where_committed`` seeks those to the first offset of their log.
6. The RocksDB store's databases (``Store._dbs``, private, and its ``offset_key``): :func:`scan_table` reads a
   table's active partitions a slice at a time from where the last slice ended, so that a pass over every
   stored window never holds the event loop for the whole table, as ``table.items()`` in one go does.
7. When clicks start to flow after a rebalance (``App.on_rebalance_complete``, ``App.flow_control``,
   ``Recovery.on_recovery_completed``): Faust resumes the stream partitions and seeks them to the committed
   offsets, and only then resumes flow control, which clears every stream queue (``FlowControlEvent.resume``).
   From a worker's second assignment on, its fetch loop already runs (Faust stops it only when the app stops):
   a record it put into the agent's queue during that seek was cleared and never fetched again (Faust's read
   offset was past it), a hole the ledger then read from the log (3 in a 10-minute churn run). The changelog
   recovery before it resumes flow control too, so :func:`hold_stream_queues` suspends it again from
   ``on_rebalance_complete``, which Faust sends just before it resumes the stream partitions: the fetch loop then
   waits before putting anything into a queue until Faust's own resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from faust.streams import _current_event
from faust.types import TP

log = logging.getLogger(__name__)


def hold_stream_queues(app: Any) -> None:
    """Suspend Faust's flow control until its recovery resumes it (7. above). Only while rebalancing: Faust's
    recovery ends every rebalance with ``flow_control.resume()``."""
    if app.rebalancing:
        app.flow_control.suspend()


@contextlib.contextmanager
def current_event_of(event: Any | None) -> Iterator[None]:
    """Within the block, Faust's current event is ``event`` (None: no event, so that a table deletes a key
    by its own partition rather than by the partition of whatever event the stream last saw)."""
    token = _current_event.set(weakref.ref(event) if event is not None else None)
    try:
        yield
    finally:
        _current_event.reset(token)


def scan_table(table: Any, after: tuple[int, bytes] | None, limit: int
               ) -> tuple[list[tuple[bytes, bytes]], tuple[int, bytes] | None]:
    """Up to ``limit`` (key, value) items of the table's actively assigned partitions, in (partition, key)
    order, from just after ``after`` (None: the start); and where the next slice starts (None: the scan is
    done). Each call reads its own RocksDB iterators, so writes between slices are fine: a key written meanwhile
    is read by a later slice or not at all."""
    store = table.data
    topic = table.changelog_topic.get_topic_name()
    actives = table.app.assignor.assigned_actives()
    items: list[tuple[bytes, bytes]] = []
    for partition in sorted(store._dbs):
        if TP(topic, partition) not in actives or (after is not None and partition < after[0]):
            continue
        it = store._dbs[partition].iter()
        if after is not None and partition == after[0]:
            it.seek(after[1])
            if it.valid() and it.key() == after[1]:
                it.next()
        else:
            it.seek_to_first()
        while it.valid():
            key = it.key()
            if key != store.offset_key:  # the store's own record of the changelog offset it has applied
                items.append((key, it.value()))
                if len(items) >= limit:
                    return items, (partition, key)
            it.next()
    return items, None


async def commit(consumer: Any, offsets: dict[TP, int]) -> bool:
    """Commit ``offsets`` (the next offset to read, per partition) for the consumer group; False when the group
    rebalanced meanwhile (Faust's consumer crashes the worker on any other failure, as for its own commits)."""
    return bool(await consumer._thread.commit(offsets))


@dataclasses.dataclass(frozen=True)
class TableWrite:
    """One key's new value (None: delete) and the event whose partition files it in the store (None for a
    delete outside stream iteration: the store then looks in every partition's database)."""
    key: bytes
    value: bytes | None
    event: Any | None
    headers: tuple = ()


async def write_table(table: Any, faust_producer: Any, writes: Sequence[TableWrite],
                      on_failure: Callable[[BaseException], None]) -> None:
    """Write ``writes`` to the table's local store and send them to its changelog, one record batch per
    partition. Returns once the records are in the producer (so the next commit waits for their delivery);
    the store's persisted offset per partition follows each delivered batch, as Faust's own callback does.
    For tables with ``use_partitioner=True`` (the changelog partition of a key is the partition of its clicks)."""
    if not writes:
        return
    store = table.data
    for w in writes:
        if w.value is None:
            del store[w.key]
        else:
            with current_event_of(w.event):
                store[w.key] = w.value
    topic = table.changelog_topic.get_topic_name()

    def persisted(partition: int, last_offset: int) -> None:
        try:
            store.set_persisted_offset(TP(topic, partition), last_offset)
        except Exception as exc:  # a partition revoked meanwhile: recovery then reads a little more
            log.warning("%s: persisted offset %d of partition %d not stored: %s", topic, last_offset, partition, exc)

    await send_in_batches(faust_producer, topic, writes, on_failure, persisted)


async def send_in_batches(faust_producer: Any, topic: str, messages: Sequence[Any],
                          on_failure: Callable[[BaseException], None],
                          on_delivered: Callable[[int, int], None] | None = None) -> None:
    """Send ``messages`` (``.key``, ``.value``, ``.headers``) to ``topic``: one record batch per partition.

    Keyed messages go where Kafka's default partitioner puts them (murmur2 of the key, as the Java client
    and aiokafka do), unkeyed ones round-robin. ``on_failure`` is called if a batch is not delivered,
    ``on_delivered(partition, offset of its last record)`` when one is.
    """
    from aiokafka.partitioner import murmur2

    producer = faust_producer._ensure_producer()
    partitions = sorted(await producer.partitions_for(topic))
    n = len(partitions)
    by_partition: dict[int, list[Any]] = {}
    for i, m in enumerate(messages):
        p = partitions[(murmur2(m.key) & 0x7FFFFFFF) % n] if m.key is not None else partitions[i % n]
        by_partition.setdefault(p, []).append(m)

    async def send(batch: Any, partition: int, count: int) -> None:
        def check(fut: Any) -> None:
            if fut.cancelled():
                return
            if fut.exception() is not None:
                on_failure(fut.exception())
            elif on_delivered is not None:
                on_delivered(partition, fut.result().offset + count - 1)  # a batch's metadata: its base offset

        batch.close()
        (await producer.send_batch(batch, topic, partition=partition)).add_done_callback(check)

    for partition, group in by_partition.items():
        batch, count = producer.create_batch(), 0
        for m in group:
            if batch.append(timestamp=None, key=m.key, value=m.value, headers=list(m.headers)) is None:  # full
                await send(batch, partition, count)
                batch, count = producer.create_batch(), 0
                if batch.append(timestamp=None, key=m.key, value=m.value, headers=list(m.headers)) is None:
                    raise ValueError(f"a message of {len(m.value)} bytes does not fit in a record batch")
            count += 1
        await send(batch, partition, count)
