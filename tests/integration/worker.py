"""Helpers to run real `faust -A streams.app worker` processes against the local broker in tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schemas.codec import AvroCodec
from streams.settings import Settings
from streams.window import UserWindow
from tests.conftest import REPO
from tests.integration.conftest import consume_until, read_all

FAUST = str(Path(sys.executable).parent / "faust")
PREDICTION = AvroCodec("prediction")


def worker_env(settings: Settings, model_dir: Path, state_dir: Path) -> dict[str, str]:
    return {**os.environ, "CLICKSTREAM_BROKER": settings.broker, "CLICKSTREAM_APP_ID": settings.app_id,
            "CLICKSTREAM_CLICKS_TOPIC": settings.clicks_topic, "CLICKSTREAM_PREDICTIONS_TOPIC": settings.predictions_topic,
            "CLICKSTREAM_DEAD_LETTER_TOPIC": settings.dead_letter_topic, "CLICKSTREAM_PARTITIONS": str(settings.partitions),
            "CLICKSTREAM_MODEL_DIR": str(model_dir), "CLICKSTREAM_DATA_DIR_WORKER": str(state_dir),
            "CLICKSTREAM_PREDICTOR_BATCH_SIZES": "64,512", "CLICKSTREAM_PREDICTOR_LENGTHS": "16",
            "CLICKSTREAM_INFERENCE_THREADS": "1"}


class Worker:
    """One worker process; its output goes to a log file that tests print when they fail."""

    def __init__(self, settings: Settings, model_dir: Path, state_dir: Path, name: str = "worker") -> None:
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = state_dir.parent / f"{name}.log"
        self.env = worker_env(settings, model_dir, state_dir)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> Worker:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([FAUST, "-A", "streams.app", "worker", "-l", "info", "--without-web"], cwd=REPO,
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while "shapes warmed" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 60.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def predictions_by_event(settings: Settings, event_ids: Iterable[str], timeout_s: float = 180.0) -> dict[str, list[dict]]:
    """Read predictions until every event id has at least one; all predictions per event id."""
    wanted = set(event_ids)
    found: dict[str, list[dict]] = {}

    def take(record: Any) -> bool:
        p = PREDICTION.decode(record.value)
        found.setdefault(p["event_id"], []).append(p)
        return wanted <= found.keys()

    consume_until(settings, settings.predictions_topic, take, timeout_s,
                  lambda: f"{len(wanted - found.keys())} of {len(wanted)} event ids without a prediction")
    return found


def expected_windows(clicks: Iterable[dict[str, Any]], max_events: int) -> dict[str, UserWindow]:
    """Windows of an uninterrupted run: every click once, in production order per user."""
    windows: dict[str, UserWindow] = {}
    for c in clicks:
        windows.setdefault(c["user_id"], UserWindow.empty()).add(
            c["event_id"], c["category_id"], c["event_type"], c["event_time_ms"], max_events)
    return windows


def changelog_windows(settings: Settings, timeout_s: float = 60.0) -> dict[str, UserWindow]:
    """The newest value per user in the table's changelog topic (what any worker recovers from)."""
    topic = f"{settings.app_id}-user_to_window-changelog"
    latest: dict[str, UserWindow] = {}
    for record in read_all(settings, topic, timeout_s):
        if record.value is not None:
            latest[record.key.decode()] = UserWindow.unpack(record.value)
    return latest


def as_tuple(w: UserWindow) -> tuple[list[int], list[int], list[int], list[str]]:
    return w.times_ms, w.event_types, w.checksums, w.categories

