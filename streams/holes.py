"""A safety net: offsets that Faust's consumer never handed to the agent, read from the log and handled.

Within an assignment a partition's messages should reach the agent in offset order from its committed offset.
Faust's fetch loop can drop some after a rebalance (records fetched before a seek delivered after it, its read
offset then ahead of the re-fetched ones). The ledger (streams/ledger.py) names the offsets a batch skips; then
:class:`LogReader` reads them from the log with a consumer of its own (no group: it commits nothing), and
:func:`with_filled` places them before the message that revealed the hole, so that they are handled in the same
batch, before it is committed. A hole without records (a transactional producer's commit marker, records gone
with retention) reads nothing. Each hole is logged and counted (``clickstream_skipped_offsets_total``).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from streams.batch import Message

TopicPartition = tuple[str, int]
READ_TIMEOUT_S = 30.0


class LogReader:
    """Reads offset ranges of partitions with one aiokafka consumer, started at the first read and kept."""

    def __init__(self, client_config: dict[str, Any], timeout_s: float = READ_TIMEOUT_S) -> None:
        self.client_config = client_config
        self.timeout_s = timeout_s
        self._consumer: Any = None

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[Message]:
        """The records of ``topic[partition]`` with offsets in [start, end), oldest first. Raises TimeoutError
        if the log cannot be read up to ``end`` within the timeout (the broker is away)."""
        from aiokafka import TopicPartition as KafkaTopicPartition

        consumer = await self._started()
        tp = KafkaTopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        found: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        while await consumer.position(tp) < end:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{topic}[{partition}]: offsets {start} to {end - 1} not read within "
                                   f"{self.timeout_s:.0f}s")
            records = (await consumer.getmany(tp, timeout_ms=int(min(left, 1.0) * 1000))).get(tp, [])
            now = time.monotonic()
            found += [Message(r.key, r.value, topic, partition, r.offset, now) for r in records if r.offset < end]
        return found

    async def _started(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                        **self.client_config)
            await asyncio.wait_for(consumer.start(), self.timeout_s)
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


def with_filled(messages: Sequence[Message], filled: Sequence[tuple[TopicPartition, int, Sequence[Message]]]
                ) -> tuple[list[Message], list[int]]:
    """``messages`` with each hole's records placed right before the message that revealed it: ``filled`` holds
    (partition, offset of that message, records). Also, for each message of the result, the index in
    ``messages`` of the one it stands for: itself, or for a record read from the log the message that revealed
    its hole (same partition: Faust files table writes by it)."""
    before = {(tp, seen): records for tp, seen, records in filled if records}
    merged: list[Message] = []
    origin: list[int] = []
    for i, m in enumerate(messages):
        records = before.pop(((m.topic, m.partition), m.offset), None)
        if records:
            merged += records
            origin += [i] * len(records)
        merged.append(m)
        origin.append(i)
    return merged, origin
