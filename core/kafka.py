"""Kafka clients built from the settings; an unreachable broker is one BrokerUnavailable.

kafka-python serves admin work and simple consumers; bulk sends go through aiokafka (Faust's own client)
record batches, see :func:`send_all`.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from core.errors import BrokerUnavailable, ClickstreamError, ConfigError
from core.settings import Settings

BOOTSTRAP_TIMEOUT_MS = 5000


def unreachable(settings: Settings) -> BrokerUnavailable:
    """The one error for a broker that does not answer, whichever client found out."""
    return BrokerUnavailable(f"no Kafka broker answered at {settings.broker} (start one with `make kafka-up`, "
                             f"or set CLICKSTREAM_BROKER)")


@contextlib.contextmanager
def broker_errors(settings: Settings) -> Iterator[None]:
    """Turn the client's bootstrap timeout into one clear BrokerUnavailable."""
    try:
        yield
    except KafkaTimeoutError as exc:
        if "bootstrap" in str(exc).lower():
            raise unreachable(settings) from None
        raise


def admin(settings: Settings) -> KafkaAdminClient:
    with broker_errors(settings):
        return KafkaAdminClient(**settings.kafka_python_config(), bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)


def ensure_topics(settings: Settings, names: Iterable[str], partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        created = []
        for name in wanted:
            try:
                client.create_topics([NewTopic(name, partitions or settings.partitions,
                                               settings.replication_factor)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        _wait_for_leaders(settings, client, created)
        return created
    finally:
        client.close()


def _wait_for_leaders(settings: Settings, client: KafkaAdminClient, topics: list[str],
                      timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while topics:
        described = client.describe_topics(topics)
        if all(t.get("partitions") and all(p.get("leader_id", -1) >= 0 for p in t["partitions"])
               for t in described):
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topics {topics} have no leader after {timeout_s:.0f}s at {settings.broker}")
        time.sleep(0.2)


def partition_counts(settings: Settings, names: Iterable[str]) -> dict[str, int]:
    """Partitions of each of ``names`` that exists (missing topics are left out)."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n in existing]
        described = {t["name"]: len(t["partitions"]) for t in client.describe_topics(wanted)} if wanted else {}
        return {name: described[name] for name in wanted}
    finally:
        client.close()


def check_co_partitioned(settings: Settings, names: Iterable[str]) -> None:
    """Topics whose keys must meet on the same partition number need the same partition count."""
    counts = partition_counts(settings, names)
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in counts.items())
        raise ConfigError(f"topics must have the same number of partitions for each user's clicks and window to "
                          f"meet on one worker: {listed}; add partitions to the smaller ones "
                          f"(kafka-topics.sh --alter --partitions N) or use a new app id with CLICKSTREAM_PARTITIONS")


def consumer_at(settings: Settings, topic: str, *, from_beginning: bool,
                **overrides: Any) -> KafkaConsumer:
    """A group-less consumer assigned to every partition of ``topic`` at its beginning or its end."""
    config = dict(settings.kafka_python_config(), enable_auto_commit=False, group_id=None,
                  bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
    config.update(overrides)
    with broker_errors(settings):
        consumer = KafkaConsumer(**config)
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        consumer.close()
        raise ClickstreamError(f"topic {topic!r} does not exist at {settings.broker} (run `clickstream topics`)")
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    if from_beginning:
        consumer.seek_to_beginning(*assigned)
    else:
        consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the end offsets now, so that nothing sent after this call is missed
            consumer.position(tp)
    return consumer


def topic_size(settings: Settings, topic: str) -> int:
    """Records in ``topic``: the sum of its partitions' end offsets."""
    consumer = consumer_at(settings, topic, from_beginning=False)
    try:
        return sum(consumer.end_offsets(list(consumer.assignment())).values())
    finally:
        consumer.close()


@dataclass
class SendStats:
    sent: int = 0
    failed: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


Message = tuple[bytes | None, bytes, int | None]  # key, value, timestamp_ms


def send_all(settings: Settings, topic: str, messages: Iterable[Message],
             *, due_s: Callable[[int, int | None], float] | None = None,
             on_delivered: Callable[[int], None] | None = None) -> SendStats:
    """Send keyed messages to ``topic`` and wait until all are acknowledged; failures are counted, not lost.

    ``due_s(i, timestamp_ms)`` gives the earliest time (seconds after the first send) for message ``i``,
    for paced sends. ``on_delivered(n)`` is told, now and then, that the first n messages are delivered
    (for checkpoints). Messages are packed into per-partition record batches with aiokafka's compiled batch
    builder and the Java client's murmur2 partitioner (same partition as any other Kafka client): about
    15x the per-message rate of kafka-python's producer on this machine.
    """
    return asyncio.run(_send_all(settings, topic, messages, due_s, on_delivered))


async def _send_all(settings: Settings, topic: str, messages: Iterable[Message],
                    due_s: Callable[[int, int | None], float] | None,
                    on_delivered: Callable[[int], None] | None) -> SendStats:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.partitioner import murmur2

    stats = SendStats()
    prod = AIOKafkaProducer(**settings.aiokafka_config(), acks="all", linger_ms=5,
                            max_batch_size=512 * 1024, request_timeout_ms=30_000)
    try:
        await prod.start()
    except KafkaConnectionError:
        await prod.stop()
        raise unreachable(settings) from None
    try:
        partitions = sorted(await prod.partitions_for(topic))
        # per partition: (batch, messages in it, index of its first message)
        open_batches: dict[int, tuple[Any, int, int]] = {}
        in_flight: list[tuple[asyncio.Future[Any], int, int]] = []
        appended = 0
        first_failed = None

        async def ship(partition: int) -> None:
            batch, count, first = open_batches.pop(partition)
            batch.close()
            in_flight.append((await prod.send_batch(batch, topic, partition=partition), count, first))

        async def ship_all() -> None:
            for partition in list(open_batches):
                await ship(partition)

        def reap() -> None:
            nonlocal first_failed
            keep = []
            for fut, count, first in in_flight:
                if not fut.done():
                    keep.append((fut, count, first))
                elif fut.exception() is not None:
                    stats.failed += count
                    stats.first_error = stats.first_error or f"{type(fut.exception()).__name__}: {fut.exception()}"
                    first_failed = first if first_failed is None else min(first_failed, first)
                else:
                    stats.sent += count
            in_flight[:] = keep
            if on_delivered is not None:
                pending = [f for _, _, f in in_flight] + [f for _, _, f in open_batches.values()]
                if first_failed is not None:
                    pending.append(first_failed)
                on_delivered(min(pending, default=appended))

        start = time.perf_counter()
        for i, (key, value, ts_ms) in enumerate(messages):
            if due_s is not None:
                wait = start + due_s(i, ts_ms) - time.perf_counter()
                if wait > 0:
                    await ship_all()  # ahead of schedule: what is queued goes out now
                    await asyncio.sleep(wait)
            if key is None:  # unkeyed: spread round-robin
                partition = partitions[i % len(partitions)]
            else:
                partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            batch, count, first = open_batches.get(partition) or (prod.create_batch(), 0, i)
            if batch.append(key=key, value=value, timestamp=ts_ms) is None:  # full
                open_batches[partition] = (batch, count, first)
                await ship(partition)
                batch, count, first = prod.create_batch(), 0, i
                if batch.append(key=key, value=value, timestamp=ts_ms) is None:
                    raise ClickstreamError(f"message {i} ({len(value)} bytes) exceeds the batch size")
            open_batches[partition] = (batch, count + 1, first)
            appended = i + 1
            if len(in_flight) > 64:
                reap()
        await ship_all()
        await asyncio.gather(*(fut for fut, _, _ in in_flight), return_exceptions=True)
        reap()
        stats.elapsed_s = time.perf_counter() - start
    finally:
        await prod.stop()
    return stats
