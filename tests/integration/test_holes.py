"""Holes in a partition's offsets, on the real broker: reading them from the log, and commit markers of
transactional producers, which are holes without records (streams/holes.py)."""
from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, send_all
from core.records import Click
from core.settings import Settings
from schemas.codec import RecordCodec
from streams.holes import LogReader
from tests.conftest import REPO
from tests.integration.conftest import consume, read_all, sample_clicks
from tests.integration.worker import TEST_SHAPES, predictions_by_event, produce, worker_for

CLICK = RecordCodec(Click)


async def produce_in_transactions(settings: Settings, topic: str, clicks: Sequence[Click], per_transaction: int,
                                  abort_every: int = 0) -> None:
    """Each ``per_transaction`` clicks in a transaction of their own (each commit leaves a marker on every
    partition it wrote to); every ``abort_every``-th transaction is aborted."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(transactional_id=f"tx-{settings.app_id}", **settings.aiokafka_config())
    await producer.start()
    try:
        for n, i in enumerate(range(0, len(clicks), per_transaction), start=1):
            await producer.begin_transaction()
            for c in clicks[i:i + per_transaction]:
                await producer.send(topic, CLICK.encode(c), key=c.user_id.encode())
            if abort_every and n % abort_every == 0:
                await producer.abort_transaction()
            else:
                await producer.commit_transaction()
    finally:
        await producer.stop()


def test_the_log_reader_reads_a_range_of_offsets_and_nothing_from_commit_markers(settings: Settings) -> None:
    topic = settings.clicks_topic
    ensure_topics(settings, [topic], partitions=1)
    clicks = sample_clicks(30, f"holes-{settings.app_id}")
    assert send_all(settings, topic, [(c.user_id.encode(), CLICK.encode(c), None) for c in clicks[:10]]).failed == 0
    asyncio.run(produce_in_transactions(settings, topic, clicks[10:], per_transaction=5))  # offsets 10-14, 15: marker
    records = read_all(settings, topic)
    offsets = [r.offset for r in records]
    assert offsets[:12] == list(range(12)) and offsets[15:17] == [16, 17]  # 15 holds no record

    async def read(start: int, end: int) -> list[int]:
        reader = LogReader(settings.aiokafka_config(), timeout_s=20)
        try:
            found = await reader.read(topic, 0, start, end)
            again = await reader.read(topic, 0, start, end)  # the same consumer, seeked back
            assert [m.offset for m in again] == [m.offset for m in found]
            by_offset = {r.offset: r.value for r in records}
            assert all(m.value == by_offset[m.offset] and (m.topic, m.partition) == (topic, 0) for m in found)
            return [m.offset for m in found]
        finally:
            await reader.close()

    assert asyncio.run(read(3, 8)) == [3, 4, 5, 6, 7]
    assert asyncio.run(read(8, 17)) == [8, 9, 10, 11, 12, 13, 14, 16]
    assert asyncio.run(read(15, 16)) == []  # a commit marker: a hole without a record


@pytest.mark.slow
def test_clicks_produced_in_transactions_are_all_predicted_past_their_commit_markers(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(1_500, f"tx-{settings.app_id}")
    aborted = {c.event_id for i, c in enumerate(clicks) if (i // 50) % 5 == 4}  # every fifth transaction
    worker = worker_for(settings, worker_model, tmp_path / "state")
    try:
        worker.start()
        ensure_topics(settings, [settings.clicks_topic])
        asyncio.run(produce_in_transactions(settings, settings.clicks_topic, clicks, per_transaction=50,
                                            abort_every=5))
        found = predictions_by_event(settings, (c.event_id for c in clicks), workers=[worker])
    finally:
        worker.stop(signal.SIGTERM)
    # every offset after a commit or abort marker was a hole the worker read from the log and found empty (a
    # reader's failure would have stopped it with the batch unacknowledged); the consumer reads uncommitted
    # records, as Faust's does, so clicks of aborted transactions are predicted too
    assert set(found) == {c.event_id for c in clicks} and aborted
    assert "never reached the agent" not in worker.log()


@pytest.mark.slow
def test_clicks_the_consumer_never_hands_over_are_read_from_the_log_and_predicted(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(3_000, f"holey-{settings.app_id}")
    # once the agent has handled a batch, the consumer skips 7 clicks of each partition
    # (tests/integration/holey_app.py)
    env = worker_env(dataclasses.replace(settings, **TEST_SHAPES), worker_model, tmp_path / "state",
                     CLICKSTREAM_TEST_SKIP_COUNT="7", PYTHONPATH=str(REPO))
    worker = WorkerProcess(env, tmp_path / "worker.log", app="tests.integration.holey_app")
    try:
        worker.start()
        produce(settings, clicks[:300])
        consume(settings, settings.predictions_topic, 1)  # a batch delivered: the consumer skips from now on
        # the second part arrives while the agent is at work, so that each skipped click has a later one in its
        # partition to reveal it (a click skipped at a partition's end is the re-seek's, not this test's)
        produce(settings, clicks[300:])
        found = predictions_by_event(settings, (c.event_id for c in clicks), workers=[worker])
    finally:
        worker.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}
    log = worker.log()
    skipped: dict[int, list[int]] = {}
    for partition, offset in re.findall(r"holey_app: skipped \S+\[(\d)\] offset (\d+)", log):
        skipped.setdefault(int(partition), []).append(int(offset))
    assert skipped, "the consumer skipped nothing: the test tested nothing"
    # their predictions came from the offsets read from the log (below); a skipped click the consumer hands on
    # later after all (its fetch sought back, e.g. by Faust's seek to the committed offsets once its table recovery
    # ends, which now covers three tables) arrives handled already and is dropped on arrival, never predicted twice
    if "holey_app: delivered again" in log:
        assert "dropped on arrival" in log
    filled = re.findall(r"\[(\d)\]: offsets (\d+) to (\d+) never reached the agent \(the next one did\); (\d+) "
                        r"records read from the log", log)
    # (the worker's log throttle folds repeats of that WARNING into the first: at least one is there, and right)
    ranges = {(p, offsets[0], offsets[-1], len(offsets)) for p, offsets in skipped.items()}
    assert filled and {(int(p), int(first), int(last), int(n)) for p, first, last, n in filled} <= ranges
