"""Helpers to run real `faust -A streams.app worker` processes against the local broker in tests."""
from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.worker_process import WorkerProcess, worker_env
from core.records import Click, Prediction
from core.settings import Settings
from schemas.codec import RecordCodec
from streams.window import UserWindow
from tests.integration.conftest import consume_until, read_all

PREDICTION = RecordCodec(Prediction)
TEST_SHAPES = {"predictor_batch_sizes": (64, 512), "predictor_lengths": (16,), "inference_threads": 1}


def worker_for(settings: Settings, model_dir: Path, state_dir: Path, name: str = "worker") -> WorkerProcess:
    """A worker process of these test settings, with few predictor shapes so that it starts quickly."""
    s = dataclasses.replace(settings, **TEST_SHAPES)
    return WorkerProcess(worker_env(s, model_dir, state_dir), state_dir.parent / f"{name}.log")


def predictions_by_event(settings: Settings, event_ids: Iterable[str], timeout_s: float = 180.0) -> dict[str, list[Prediction]]:
    """Read predictions until every event id has at least one; all predictions per event id."""
    wanted = set(event_ids)
    found: dict[str, list[Prediction]] = {}

    def take(record: Any) -> bool:
        p = PREDICTION.decode(record.value)
        found.setdefault(p.event_id, []).append(p)
        return wanted <= found.keys()

    consume_until(settings, settings.predictions_topic, take, timeout_s,
                  lambda: f"{len(wanted - found.keys())} of {len(wanted)} event ids without a prediction")
    return found


def predictions_or_takeover(settings: Settings, event_ids: Iterable[str], running: WorkerProcess,
                            takeover: WorkerProcess, first_timeout_s: float = 150.0) -> dict[str, list[Prediction]]:
    """``predictions_by_event``; if the running worker stalls, it is stopped and ``takeover`` starts and must
    predict every click.

    A worker that started after another one stopped (a restart, a takeover) has been seen, three times in CI, to
    predict all but a few clicks and then nothing, with no error (README: known issue, faust-streaming #175
    alike; not root-caused). That is a liveness problem; a loss would be a click committed without its
    prediction, which stays missing whatever worker comes next: one more worker, recovering from the changelogs,
    must still deliver every click, and the caller checks windows and state as if nothing had happened.
    """
    ids = list(event_ids)
    try:
        return predictions_by_event(settings, ids, first_timeout_s)
    except TimeoutError as exc:
        print(f"worker stalled ({exc}); one more worker takes over:\n" + running.log()[-2000:])
        running.stop(signal.SIGTERM)
        takeover.start()
        return predictions_by_event(settings, ids)


def expected_windows(clicks: Iterable[Click], max_events: int) -> dict[str, UserWindow]:
    """Windows of an uninterrupted run: every click once, in production order per user."""
    windows: dict[str, UserWindow] = {}
    for c in clicks:
        windows.setdefault(c.user_id, UserWindow.empty()).add(
            c.event_id, c.category_id, c.event_type, c.event_time_ms, max_events)
    return windows


def changelog_windows(settings: Settings, timeout_s: float = 60.0) -> dict[str, UserWindow]:
    """The newest value per user in the table's changelog topic (what any worker recovers from)."""
    topic = settings.changelog_topic
    latest: dict[str, UserWindow] = {}
    for record in read_all(settings, topic, timeout_s):
        if record.value is not None:
            latest[record.key.decode()] = UserWindow.unpack(record.value)
    return latest


def as_tuple(w: UserWindow) -> tuple[list[int], list[int], list[int], list[str]]:
    return w.times_ms, w.event_types, w.checksums, w.categories

