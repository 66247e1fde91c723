"""Pins the Faust internals the worker relies on (streams/faust_glue.py): if Faust changes them, this fails."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import faust
import faust.streams
import faust.transport.drivers.aiokafka
from faust.types import TP
from faust.types import Message as FaustMessage

from streams.faust_glue import current_event_of, hold_stream_queues, scan_table


class Event:
    def __init__(self, message: FaustMessage) -> None:
        self.message = message

    def ack(self) -> bool:  # what faust.Event.ack does, with the app's consumer
        return self.message.ack(Consumer())


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


def test_a_source_topic_without_acks_is_never_committed_by_faust() -> None:
    """The clicks topics are declared with acks=False: Faust's consumer then records no acknowledgement of
    their messages, so that its commits never touch them (the worker commits them, streams/ledger.py)."""
    app = faust.App("glue-test", broker="kafka://127.0.0.1:1")
    topic = app.topic("glue-clicks", acks=False)
    app.topics.add(topic)
    asyncio.run(app.topics._update_indices())
    assert app.topics.acks_enabled_for("glue-clicks") is False


def test_a_rebalance_stops_the_flow_until_the_tables_are_recovered() -> None:
    """streams.agents.assigned_sources reads ``flow_active``: off from the revocation until recovery resumes it."""
    import inspect

    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer as FaustConsumer

    assert "self.flow_active = False" in inspect.getsource(FaustConsumer.stop_flow)
    assert "self.flow_active = True" in inspect.getsource(FaustConsumer.resume_flow)
    assert "T(consumer.stop_flow)()" in inspect.getsource(faust.App._on_partitions_revoked)
    assert "consumer.resume_flow()" in inspect.getsource(Recovery._resume_streams)


def test_flow_is_held_from_rebalance_complete_until_faust_resumes_it_after_the_stream_seek() -> None:
    """Why streams.agents.hold_streams_until_flow_resumes keeps Faust's resume from clearing a fetched click,
    and never leaves the flow suspended (streams/faust_glue.py, 7.)."""
    import inspect
    import types

    from faust.tables.recovery import Recovery
    from faust.transport.conductor import ConductorCompiler
    from mode.utils.queues import FlowControlEvent

    for method in (Recovery.on_recovery_completed, Recovery._resume_streams):
        source = inspect.getsource(method)
        steps = ["on_rebalance_complete.send()", "flow_control.resume()"]
        if method is Recovery.on_recovery_completed:
            steps[1:1] = ["consumer.resume_partitions(", "consumer.perform_seek()"]
        at = [source.index(step) for step in steps]
        assert at == sorted(at), method
    assert "await acquire_flow_control()" in inspect.getsource(ConductorCompiler.build)  # waits while held
    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)  # the clear the hold keeps empty

    flow = FlowControlEvent()
    flow.resume()
    app = types.SimpleNamespace(rebalancing=True, flow_control=flow)
    hold_stream_queues(app)
    assert not flow.is_active()
    flow.resume()  # Faust's own, at the end of the recovery
    assert flow.is_active()
    app.rebalancing = False  # a signal outside a rebalance changes nothing
    hold_stream_queues(app)
    assert flow.is_active()


def test_commits_go_through_faust_s_consumer_thread_and_the_revoke_hook_is_faust_s_callback() -> None:
    import inspect

    from faust.transport.consumer import ThreadDelegateConsumer

    from streams.faust_glue import commit

    thread_commit = faust.transport.drivers.aiokafka.AIOKafkaConsumerThread.commit
    assert inspect.iscoroutinefunction(thread_commit)
    assert list(inspect.signature(thread_commit).parameters) == ["self", "offsets"]
    assert "_thread" in inspect.getsource(ThreadDelegateConsumer.__init__)
    # streams.app.IntentApp overrides the callback Faust hands its consumer for revocations
    assert "on_partitions_revoked=self._on_partitions_revoked" in inspect.getsource(faust.App._new_consumer)

    class Thread:
        async def commit(self, offsets: dict) -> bool:
            self.offsets = offsets
            return True

    class Consumer:
        _thread = Thread()

    consumer = Consumer()
    assert asyncio.run(commit(consumer, {TP("clicks", 0): 5})) is True
    assert consumer._thread.offsets == {TP("clicks", 0): 5}


class Batch:
    """aiokafka's record batch builder, as the glue uses it."""

    def __init__(self) -> None:
        self.records: list = []

    def append(self, *, timestamp: object, key: bytes | None, value: bytes | None, headers: list) -> object:
        self.records.append((key, value, headers))
        return object()

    def close(self) -> None:
        pass


class Metadata:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class AioProducer:
    """aiokafka's producer: four partitions; a batch to partition p is delivered at base offset 100 * (p + 1)."""

    def __init__(self) -> None:
        self.sent: list = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append((topic, partition, batch.records))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(Metadata(100 * (partition + 1)))
        return fut


class FaustProducer:
    def __init__(self) -> None:
        self.aio = AioProducer()

    def _ensure_producer(self) -> AioProducer:  # the private accessor the glue relies on
        return self.aio


def test_send_in_batches_puts_each_key_where_kafkas_partitioner_does() -> None:
    from kafka.partitioner import murmur2 as java_compatible_murmur2

    from streams.faust_glue import send_in_batches

    @dataclass
    class Out:
        key: bytes | None
        value: bytes
        headers: tuple = ()

    assert hasattr(faust.transport.drivers.aiokafka.Producer, "_ensure_producer")
    producer = FaustProducer()
    messages = [Out(f"user-{i}".encode(), b"v") for i in range(50)] + [Out(None, b"dead", (("reason", b"x"),))]
    asyncio.run(send_in_batches(producer, "predictions", messages, lambda exc: None))
    sent = producer.aio.sent
    placed = {key: partition for _, partition, records in sent for key, _, _ in records}
    for i in range(50):
        key = f"user-{i}".encode()
        assert placed[key] == (java_compatible_murmur2(key) & 0x7FFFFFFF) % 4
    assert sum(len(records) for _, _, records in sent) == 51
    assert len(sent) <= 4  # one batch per partition


def test_write_table_stores_and_logs_each_key_and_persists_the_delivered_offsets() -> None:
    import faust.stores.rocksdb
    import faust.tables.base

    from streams.faust_glue import TableWrite, write_table

    # what write_table stands in for: Faust's changelog callback stores the offset the same way
    assert "set_persisted_offset" in faust.tables.base.Collection._on_changelog_sent.__code__.co_names
    assert hasattr(faust.stores.rocksdb.Store, "set_persisted_offset")

    class Store:
        def __init__(self) -> None:
            self.values: dict[bytes, tuple[bytes, int]] = {b"gone": (b"old", 3)}
            self.persisted: dict[TP, int] = {}

        def __setitem__(self, key: bytes, value: bytes) -> None:
            self.values[key] = (value, faust.streams.current_event().message.partition)  # as the RocksDB store

        def __delitem__(self, key: bytes) -> None:
            del self.values[key]

        def set_persisted_offset(self, tp: TP, offset: int) -> None:
            self.persisted[tp] = offset

    class Topic:
        def get_topic_name(self) -> str:
            return "app-user_to_window-changelog"

    class Table:
        data, changelog_topic = Store(), Topic()

    events = [Event(faust_message(i)) for i in range(20)]
    writes = [TableWrite(f"user-{i}".encode(), f"w{i}".encode(), events[i]) for i in range(20)]
    writes.append(TableWrite(b"gone", None, None))
    failures: list = []
    producer = FaustProducer()

    async def run() -> None:
        await write_table(Table(), producer, writes, failures.append)
        await asyncio.sleep(0)  # the delivery callbacks

    asyncio.run(run())
    assert failures == []
    store, sent = Table.data, producer.aio.sent
    assert store.values == {f"user-{i}".encode(): (f"w{i}".encode(), 0) for i in range(20)}
    logged = {key: value for topic, _, records in sent for key, value, _ in records}
    assert {t for t, _, _ in sent} == {"app-user_to_window-changelog"}
    assert logged == {**{w.key: w.value for w in writes}, b"gone": None}  # the delete as a tombstone
    per_partition = {p: len(records) for _, p, records in sent}
    assert store.persisted == {TP("app-user_to_window-changelog", p): 100 * (p + 1) + n - 1
                               for p, n in per_partition.items()}


def test_aiokafka_seeks_only_partitions_committed_above_0() -> None:
    """Why streams.agents.start_where_committed seeks the others itself (if aiokafka changes this, the workaround
    may go)."""
    import inspect

    from aiokafka import AIOKafkaConsumer

    assert "if offset and offset > 0:" in inspect.getsource(AIOKafkaConsumer.seek_to_committed)


def test_a_table_is_scanned_a_slice_at_a_time_over_its_active_partitions(tmp_path: Path) -> None:
    app = faust.App("glue-scan", store="rocksdb://", datadir=str(tmp_path), broker="kafka://127.0.0.1:1")
    table = app.Table("windows", partitions=3, use_partitioner=True, key_type=bytes, value_type=bytes,
                      options={"driver": "rocksdict"})
    store = table.data
    changelog = table.changelog_topic.get_topic_name()
    for partition, keys in ((0, [b"a", b"c"]), (1, [b"b"]), (2, [b"d", b"e", b"f"])):
        for key in keys:
            store._db_for_partition(partition)[key] = key.upper()
    store.set_persisted_offset(TP(changelog, 0), 41)  # kept in the partition's database, not an item
    app.assignor.assigned_actives = lambda: {TP(changelog, 0), TP(changelog, 2)}  # 1 is another worker's
    items, after = scan_table(table, None, 2)
    assert items == [(b"a", b"A"), (b"c", b"C")] and after == (0, b"c")
    store._db_for_partition(0)[b"b"] = b"B"  # behind the cursor: the next pass reads it
    store._db_for_partition(2)[b"dd"] = b"DD"  # ahead of it: this pass does
    seen = []
    while after is not None:
        items, after = scan_table(table, after, 2)
        assert len(items) <= 2
        seen += items
    assert seen == [(b"d", b"D"), (b"dd", b"DD"), (b"e", b"E"), (b"f", b"F")]
    assert scan_table(table, None, 100) == ([(b"a", b"A"), (b"b", b"B"), (b"c", b"C"), (b"d", b"D"),
                                             (b"dd", b"DD"), (b"e", b"E"), (b"f", b"F")], None)
