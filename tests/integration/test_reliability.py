"""Nothing lost, whatever arrives: oversized values and predictor failures among valid clicks (real broker)."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from benchmarks.common import process_tree
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, send_all
from core.records import Click
from core.settings import Settings
from schemas.codec import RecordCodec
from tests.conftest import REPO
from tests.integration.conftest import read_all, sample_clicks
from tests.integration.worker import (
    TEST_SHAPES,
    clicks_offsets,
    predictions_by_event,
    stall_report,
    worker_for,
)

CLICK = RecordCodec(Click)
pytestmark = pytest.mark.slow


def faulty_worker(settings: Settings, model: Path, state: Path, fault: str, name: str) -> WorkerProcess:
    """A worker in the default mode whose inference engine builds a predictor that fails on purpose."""
    s = dataclasses.replace(settings, **TEST_SHAPES, predictor_factory="tests.integration.faults:FaultyPredictor")
    env = worker_env(s, model, state, CLICKSTREAM_TEST_FAULT=fault, PYTHONPATH=str(REPO))
    return WorkerProcess(env, state.parent / f"{name}.log")


def dead_letters(settings: Settings, count: int, timeout_s: float = 60.0) -> list:
    """The dead letters once they are ``count`` or more (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while len(dead := read_all(settings, settings.dead_letter_topic)) < count and time.monotonic() < deadline:
        time.sleep(1)
    return dead


def dead_event_ids(settings: Settings, wanted: set[str], timeout_s: float = 60.0) -> list[str]:
    """The event ids of the dead-lettered clicks once ``wanted`` are among them (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids = [CLICK.decode(d.value).event_id for d in read_all(settings, settings.dead_letter_topic)]
        if wanted <= set(ids) or time.monotonic() > deadline:
            return ids
        time.sleep(1)


async def send_big(settings: Settings, key: bytes, value: bytes) -> None:
    """One message larger than our clients' batches: what a careless producer with a raised limit sends."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**settings.aiokafka_config(), max_request_size=1_048_000, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.clicks_topic, value, key=key)
    finally:
        await producer.stop()


def test_an_oversized_message_is_dead_lettered_and_every_valid_click_predicted(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(300, f"big-{settings.app_id}")
    huge = random.Random(1).randbytes(1_000_000)
    worker = worker_for(settings, worker_model, tmp_path / "state")
    try:
        worker.start()
        ensure_topics(settings, [settings.clicks_topic])
        assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks[:150]]).failed == 0
        asyncio.run(send_big(settings, clicks[0].key, huge))
        assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks[150:]]).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in clicks), timeout_s=120)
        (dead,) = dead_letters(settings, 1)
    finally:
        worker.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}
    headers = dict(dead.headers)
    assert headers["original_size"] == b"1000000"
    assert headers["original_sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert huge.startswith(dead.value) and len(dead.value) < 1_000_000
    assert headers["reason"].startswith(b"undecodable")


def test_a_poison_window_is_dead_lettered_and_a_broken_predictor_stops_the_worker(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(2_000, f"fault-{settings.app_id}")
    poisoned = {c.event_id for c in clicks[100:2_000:400]}
    clicks = [dataclasses.replace(c, category_id="poison") if c.event_id in poisoned else c for c in clicks]
    ensure_topics(settings, [settings.clicks_topic])
    state = tmp_path / "state"
    poison = faulty_worker(settings, worker_model, state, "poison", "poison")
    try:
        poison.start()
        assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks[:1_000]]).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in clicks[:1_000] if c.event_id not in poisoned))
        dead = dead_letters(settings, 3)
    finally:
        poison.stop(signal.SIGTERM)
    assert {CLICK.decode(d.value).event_id for d in dead} == {c.event_id for c in clicks[:1_000]} & poisoned
    assert all(dict(d.headers)["reason"].startswith(b"prediction failed: RuntimeError") for d in dead)
    assert not (set(found) & poisoned)

    # a predictor that breaks after two calls: the worker stops (exit 70) and acknowledges nothing it did not
    # handle. Poison windows fail in its first two calls too, so a break can come in the middle of isolating
    # one: the valid windows that fail after it must not be dead-lettered as if they were poison.
    broken = faulty_worker(settings, worker_model, state, "poison,broken-after-2", "broken")
    broken.start()
    assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks[1_000:]]).failed == 0
    assert broken.process is not None and broken.process.wait(120) == 70
    assert "stopping the worker without committing" in broken.log()

    # a healthy restart reads what the broken worker did not handle: every valid click is predicted. A batch
    # the broken worker delivered but did not commit is read again: its poison clicks, already in their users'
    # windows, are still predicted from the windows ending in them, so they fail and are dead-lettered again
    # (at least once), never predicted
    healthy = faulty_worker(settings, worker_model, state, "poison", "healthy")
    try:
        healthy.start()
        found = predictions_by_event(settings, [c.event_id for c in clicks if c.event_id not in poisoned],
                                     timeout_s=150)
        dead_ids = dead_event_ids(settings, poisoned)
    finally:
        healthy.stop(signal.SIGTERM)
    assert not (set(found) & poisoned)
    assert set(dead_ids) == poisoned


def worker_exit(env: dict[str, str], timeout_s: float = 120.0) -> tuple[int, str]:
    import subprocess

    from benchmarks.worker_process import FAUST

    done = subprocess.run([FAUST, "-A", "streams.app", "worker", "--without-web"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    return done.returncode, done.stderr


def test_topics_with_different_partition_counts_are_refused_in_one_line(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    ensure_topics(settings, [settings.clicks_topic], partitions=1)  # next to 4-partition rekeyed and changelog
    code, stderr = worker_exit(worker_env(settings, worker_model, tmp_path / "state"))
    assert code == 2, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(
        f"error: topics must have the same number of partitions for each user's clicks and window to meet on one "
        f"worker: {settings.clicks_topic} has 1, {settings.rekeyed_topic} has 4")


def test_a_new_app_id_in_the_same_state_folder_starts_empty_and_a_foreign_state_is_refused(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    """The tables live under <state dir>/<app id>: a second app id in the same folder (a fresh reprocessing)
    starts with empty tables and predicts every click again. A folder whose owner.json names another Kafka
    cluster (the broker was reset) is refused in one line, never used."""
    import json

    clicks = sample_clicks(500, f"apps-{settings.app_id}")
    state = tmp_path / "state"
    ensure_topics(settings, [settings.clicks_topic])
    assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks]).failed == 0
    for app_id in (settings.app_id, f"{settings.app_id}-again"):
        s = dataclasses.replace(settings, app_id=app_id, predictions_topic=f"{settings.predictions_topic}-{app_id}")
        worker = worker_for(s, worker_model, state, app_id).start()
        try:
            found = predictions_by_event(s, (c.event_id for c in clicks), workers=[worker])
        finally:
            worker.stop(signal.SIGTERM)
        assert set(found) == {c.event_id for c in clicks}
        assert (state / app_id / "owner.json").is_file()
    assert "ConsistencyError" not in worker.log()

    owner = state / settings.app_id / "owner.json"
    recorded = json.loads(owner.read_text())
    assert settings.changelog_topic in recorded["topics"]  # recorded once Faust had created it
    owner.write_text(json.dumps({**recorded, "cluster_id": "another-cluster"}))
    code, stderr = worker_exit(worker_env(settings, worker_model, state))
    assert code == 2, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(
        f"error: the worker state at {state / settings.app_id} was built from Kafka cluster another-cluster, not "
        f"this broker's")


def test_a_misconfigured_worker_is_one_line() -> None:
    import os

    code, stderr = worker_exit({**os.environ, "CLICKSTREAM_BATCH_MAX": "abc"})
    assert code == 2 and stderr.strip().splitlines() == ["error: batch_max must be int, got 'abc'"]


def inference_processes(pid: int) -> list[int]:
    """The worker's inference processes (multiprocessing's spawned children; not its resource tracker)."""
    found = []
    for child in process_tree(pid)[1:]:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue  # gone meanwhile
    return found


def test_a_killed_inference_process_stops_the_worker_and_a_restart_predicts_every_click(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    """The inference process dies (kill -9, the OOM killer): the worker stops without committing the batch
    it handed over (exit 70), and a restart predicts every click."""
    clicks = sample_clicks(2_000, f"child-{settings.app_id}")
    ensure_topics(settings, [settings.clicks_topic])
    state = tmp_path / "state"
    s = dataclasses.replace(settings, inference_process=True)
    worker = worker_for(s, worker_model, state, "killed").start()
    try:
        assert send_all(s, s.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks[:1_000]]).failed == 0
        predictions_by_event(s, (c.event_id for c in clicks[:1_000]), workers=[worker])
        (child,) = inference_processes(worker.pid)
        os.kill(child, signal.SIGKILL)
        assert send_all(s, s.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks[1_000:]]).failed == 0
        assert worker.process is not None and worker.process.wait(120) == 70, worker.log()[-3000:]
    finally:
        worker.stop(signal.SIGKILL)
    assert "stopping the worker without committing the batch in hand" in worker.log()

    healthy = worker_for(s, worker_model, state, "healthy").start()
    try:
        found = predictions_by_event(s, (c.event_id for c in clicks), timeout_s=150, workers=[healthy])
    finally:
        healthy.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}


def test_a_stalled_worker_dumps_its_tasks_and_exits_and_a_restart_predicts_every_click(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(3_000, f"stall-{settings.app_id}")
    ensure_topics(settings, [settings.clicks_topic])
    state = tmp_path / "state"
    watched = dataclasses.replace(settings, stall_timeout_s=15)
    stalling = faulty_worker(watched, worker_model, state, "hang-after-3", "stalling")
    stalling.start()
    assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks]).failed == 0
    assert stalling.process is not None and stalling.process.wait(120) == 75
    log = stalling.log()
    assert "stalled: the committed offset has not moved for 15s while clicks wait" in log
    dump = log.split("What every task was doing", 1)[1]
    assert "in _reply" in dump and "in finish" in dump  # the dump shows the batch awaiting the engine's reply
    assert "in _reply" in stall_report(settings, [stalling])  # what a test timeout would print

    healthy = worker_for(watched, worker_model, state, "healthy").start()
    try:
        found = predictions_by_event(settings, (c.event_id for c in clicks), timeout_s=150, workers=[healthy])
        time.sleep(25)  # longer than the stall timeout with nothing behind: an idle worker is not stalled
        assert healthy.process is not None and healthy.process.poll() is None, healthy.log()[-3000:]
    finally:
        healthy.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}


def test_a_worker_whose_event_loop_stops_dumps_every_thread_and_exits(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(1_000, f"frozen-{settings.app_id}")
    ensure_topics(settings, [settings.clicks_topic])
    state = tmp_path / "state"
    frozen = WorkerProcess(worker_env(dataclasses.replace(settings, **TEST_SHAPES, stall_timeout_s=10), worker_model,
                                      state, PYTHONPATH=str(REPO)), state.parent / "frozen.log",
                           app="tests.integration.faulty_app")
    frozen.start()
    assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks]).failed == 0
    assert frozen.process is not None and frozen.process.wait(120) == 1
    log = frozen.log()
    assert "Timeout (0:00:15)!" in log  # Python's faulthandler: every thread's stack, the loop's first
    dump = log.split("Timeout (0:00:15)!", 1)[1]
    assert re.search(r'asyncio/events\.py", line \d+ in _run\n', dump)  # the main thread: its loop stuck in a callback


def test_committed_offsets_reach_the_end_after_a_kill_9_loop(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(12_000, f"loop-{settings.app_id}")
    ensure_topics(settings, [settings.clicks_topic])
    assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks]).failed == 0
    state = tmp_path / "state"
    for kill in range(3):  # killed while predicting, three times
        worker = worker_for(settings, worker_model, state, f"kill-{kill}").start()
        time.sleep(4)
        worker.stop(signal.SIGKILL)
    last = worker_for(settings, worker_model, state, "last").start()
    try:
        found = predictions_by_event(settings, (c.event_id for c in clicks), timeout_s=240, workers=[last])
        deadline = time.monotonic() + 60
        while True:
            behind = {p: end - (committed or 0) for p, (committed, end) in clicks_offsets(settings).items()}
            if not any(behind.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        last.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}
    assert not any(behind.values()), f"committed offsets behind the end of the clicks topic: {behind}"


def test_clicks_written_with_older_and_newer_schemas_are_all_predicted(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    import io
    import json

    import fastavro

    from schemas.codec import single_object_fingerprint

    newer_dir = REPO / "tests" / "unit" / "data"
    newer = fastavro.parse_schema(json.loads((newer_dir / "click.v2-newer.avsc").read_text()))
    clicks = sample_clicks(600, f"evolve-{settings.app_id}")
    older_codec = RecordCodec(Click, single_object=True)  # the released version 1

    def newer_bytes(c: Click) -> bytes:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, newer, {**c.to_avro(), "event_type": "share", "device": "app"})
        return b"\xc3\x01" + single_object_fingerprint(newer) + body.getvalue()

    messages = [(c.key, CLICK.encode(c), None) for c in clicks[:200]]  # bare, current schema
    messages += [(c.key, older_codec.encode(c), None) for c in clicks[200:400]]
    messages += [(c.key, newer_bytes(c), None) for c in clicks[400:]]
    worker = worker_for(dataclasses.replace(settings, schema_dir=str(newer_dir)), worker_model, tmp_path / "state")
    try:
        worker.start()
        ensure_topics(settings, [settings.clicks_topic])
        assert send_all(settings, settings.clicks_topic, messages).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in clicks))
    finally:
        worker.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}
    assert not read_all(settings, settings.dead_letter_topic)
