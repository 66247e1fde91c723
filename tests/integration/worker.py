"""Helpers to run real `faust -A streams.app worker` processes against the local broker in tests."""
from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.churn import changelog_windows, expected_windows  # noqa: F401 (the tests' too)
from benchmarks.churn import window_tuple as as_tuple  # noqa: F401
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, send_all
from core.records import Click, Prediction
from core.settings import Settings
from schemas.codec import RecordCodec
from tests.integration.conftest import consume_until

CLICK = RecordCodec(Click)
PREDICTION = RecordCodec(Prediction)
TEST_SHAPES = {"predictor_batch_sizes": (64, 512), "predictor_lengths": (16,), "inference_threads": 1}


def produce(settings: Settings, clicks: Sequence[Click], keyed: bool = True) -> None:
    """Send ``clicks`` to the clicks topic (created if missing), keyed by user unless ``keyed`` is False; all of
    them must be delivered."""
    ensure_topics(settings, [settings.clicks_topic])
    messages = [(c.key if keyed else None, CLICK.encode(c), c.event_time_ms) for c in clicks]
    stats = send_all(settings, settings.clicks_topic, messages)
    assert stats.sent == len(clicks) and stats.failed == 0


def worker_for(settings: Settings, model_dir: Path, state_dir: Path, name: str = "worker") -> WorkerProcess:
    """A worker process of these test settings, with few predictor shapes so that it starts quickly."""
    s = dataclasses.replace(settings, **TEST_SHAPES)
    return WorkerProcess(worker_env(s, model_dir, state_dir), state_dir.parent / f"{name}.log")


def predictions_by_event(settings: Settings, event_ids: Iterable[str], timeout_s: float = 180.0,
                         workers: Sequence[WorkerProcess] = ()) -> dict[str, list[Prediction]]:
    """Read predictions until every event id has at least one; all predictions per event id. On a timeout the
    error carries what the running ``workers`` were doing (:func:`stall_report`)."""
    wanted = set(event_ids)
    found: dict[str, list[Prediction]] = {}

    def take(record: Any) -> bool:
        p = PREDICTION.decode(record.value)
        found.setdefault(p.event_id, []).append(p)
        return wanted <= found.keys()

    try:
        consume_until(settings, settings.predictions_topic, take, timeout_s,
                      lambda: f"{len(wanted - found.keys())} of {len(wanted)} event ids without a prediction")
    except TimeoutError as exc:
        if workers:
            raise TimeoutError(f"{exc}\n{stall_report(settings, workers)}") from None
        raise
    return found


def py_spy_dump(pid: int) -> str:
    import subprocess
    import sys
    from pathlib import Path

    spy = Path(sys.executable).parent / "py-spy"
    try:
        done = subprocess.run([str(spy), "dump", "--native", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=60)
        return (done.stdout + done.stderr)[-20_000:]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"py-spy: {exc!r}"


def clicks_offsets(settings: Settings) -> dict[int, tuple[int | None, int]]:
    """Per partition of the clicks topic: the group's committed offset (None: none yet) and the end offset."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=settings.broker)
    consumer = KafkaConsumer(bootstrap_servers=settings.broker)
    try:
        tps = [TopicPartition(settings.clicks_topic, p) for p in sorted(consumer.partitions_for_topic(settings.clicks_topic))]
        ends = consumer.end_offsets(tps)
        committed = admin.list_group_offsets(settings.app_id).get(settings.app_id, {})
    finally:
        consumer.close()
        admin.close()
    return {tp.partition: (committed[tp].offset if tp in committed else None, ends[tp]) for tp in tps}


def stall_report(settings: Settings, workers: Sequence[WorkerProcess]) -> str:
    """The clicks topic's committed offsets against its ends (behind: the clicks were not processed; at the end:
    they were committed, and a missing prediction is a loss), then, per running worker, the innermost frames of
    its threads (py-spy, which needs nothing of the process), its asyncio tasks (Faust's worker dumps them on
    SIGUSR1, if its event loop still turns) and the last lines of its log."""
    from kafka import KafkaAdminClient

    lines = []
    try:
        offsets = clicks_offsets(settings)
        lines.append("clicks committed/end per partition: " + ", ".join(
            f"{partition}: {committed}/{end}" for partition, (committed, end) in offsets.items()))
        admin = KafkaAdminClient(bootstrap_servers=settings.broker)
        members = admin.describe_groups([settings.app_id])
        admin.close()
        group = members[settings.app_id]
        lines.append(f"group {group['group_state']}, members {[m['member_id'] for m in group['members']]}")
    except Exception as exc:  # the report must not hide the timeout
        lines.append(f"group state not read: {exc!r}")
    for worker in workers:
        if worker.process is None:
            continue
        before = len(worker.log())
        exit_code = worker.process.poll()
        if exit_code is None:
            lines.append(f"--- {worker.log_path.name}: py-spy dump --native (every thread, even a frozen one)")
            lines.append(py_spy_dump(worker.pid))
            worker.process.send_signal(signal.SIGUSR1)
            time.sleep(3)
            dump = worker.log()[before:]
        else:  # a worker that ended itself (exit 75: its progress watchdog) dumped its tasks before
            log = worker.log()
            before = log.find("What every task was doing") + 1 or len(log)
            dump = log[before:]
        frames = [line[:200] for line in dump.splitlines()
                  if line.startswith(("THREAD ", "  TASK ", "  File ", "Stack for "))]
        lines.append(f"--- {worker.log_path.name} (exit code {exit_code}): tasks and threads ({len(frames)} lines)")
        lines.extend(frames[:400])
        lines.append(f"--- {worker.log_path.name}: log before the dump")
        lines.extend(line[:300] for line in worker.log()[:before].splitlines()[-40:])
    return "\n".join(lines)
