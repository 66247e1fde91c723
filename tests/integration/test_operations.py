"""Operating the worker: Prometheus metrics, health endpoints and the per-user query, with two workers."""
from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.worker_process import WorkerProcess, worker_env
from cli.main import main
from core.kafka import ensure_topics, send_all
from core.records import Click
from core.settings import Settings
from schemas.codec import RecordCodec
from tests.integration.conftest import sample_clicks, train_small_model
from tests.integration.worker import TEST_SHAPES, predictions_by_event

CLICK = RecordCodec(Click)
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(port: int, timeout_s: float = 60.0) -> None:
    """Until the worker's /ready answers 200 with ready true (fails after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = get(f"http://127.0.0.1:{port}/ready")
        if status == 200 and json.loads(body)["ready"] is True:
            return
        assert time.monotonic() < deadline, f"worker on port {port} not ready after {timeout_s:.0f}s: {status} {body!r}"
        time.sleep(0.5)


def scrape(port: int) -> dict[str, float]:
    """Samples of /metrics as {'name{labels}': value}."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


# the inference engine in a thread of the worker's process, or in a child process (CLICKSTREAM_INFERENCE_PROCESS)
BOTH_MODES = pytest.mark.parametrize("inference_process", [False, True], ids=["engine-thread", "engine-process"])


@BOTH_MODES
def test_metrics_health_and_the_per_user_query_across_two_workers(
        settings: Settings, worker_model: Path, tmp_path: Path, inference_process: bool) -> None:
    clicks = sample_clicks(3_000, f"ops-{settings.app_id}")
    s = dataclasses.replace(settings, **TEST_SHAPES, inference_process=inference_process)
    ports = [free_port(), free_port()]
    workers = [WorkerProcess(worker_env(s, worker_model, tmp_path / name / "state"), tmp_path / name / "worker.log",
                             web_port=port) for name, port in zip(("a", "b"), ports)]
    try:
        for w in workers:
            w.start()
        # the model loads in seconds: the second worker's join is still being rebalanced, and /ready says so
        for port in ports:
            wait_ready(port)
        ensure_topics(settings, [settings.clicks_topic])
        assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks]).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in clicks))
        for port in ports:
            assert get(f"http://127.0.0.1:{port}/live")[0] == 200
            status, body = get(f"http://127.0.0.1:{port}/ready")
            assert status == 200 and json.loads(body)["ready"] is True
        samples = [scrape(port) for port in ports]
        # both workers worked, and together they predicted every click (at least once: a batch taken by the first
        # worker while the second joined can be predicted again by the second)
        assert all(m["clickstream_predictions_total"] > 0 for m in samples)
        assert sum(m["clickstream_predictions_total"] for m in samples) >= len(clicks) == len(found)
        version = json.loads((worker_model / "manifest.json").read_text())["version"]
        assert all(m[f'clickstream_model_info{{version="{version}"}}'] == 1 for m in samples)
        assert all(m["clickstream_ready"] == 1 and m["clickstream_batch_size_count"] > 0 for m in samples)
        assert all(any(k.startswith("clickstream_consumer_lag{") for k in m) for m in samples)
        assert any(k.startswith('clickstream_stage_seconds_bucket{le="0.005",stage="inference"}') for k in samples[0])

        # the per-user query is answered whichever worker is asked, by the worker holding the user's window
        users = list(dict.fromkeys(c.user_id for c in clicks))[:12]
        for user in users:
            answers = [json.loads(get(f"http://127.0.0.1:{port}/users/{user}/intent")[1]) for port in ports]
            assert answers[0]["user_id"] == user and answers[0]["top_categories"]
            assert answers[0]["top_categories"] == answers[1]["top_categories"]
            newest = max(c.event_time_ms for c in clicks if c.user_id == user)
            assert answers[0]["event_time_ms"] == newest
        assert get(f"http://127.0.0.1:{ports[0]}/users/nobody-{settings.app_id}/intent")[0] == 404
        result = CliRunner().invoke(main, ["intent", users[0], "--worker-url", f"http://127.0.0.1:{ports[1]}"])
        assert result.exit_code == 0 and json.loads(result.output)["user_id"] == users[0]
    finally:
        for w in workers:
            w.stop(signal.SIGTERM)


@BOTH_MODES
def test_a_new_model_is_rolled_out_without_a_restart_and_a_broken_one_refused(
        settings: Settings, worker_model: Path, tmp_path: Path, inference_process: bool) -> None:
    first = json.loads((worker_model / "manifest.json").read_text())["version"]
    second_dir = train_small_model(tmp_path / "second", seed=4, clicks=10_000)
    second = json.loads((second_dir / "manifest.json").read_text())["version"]
    broken = tmp_path / "broken"
    shutil.copytree(second_dir, broken)
    (broken / "model.keras").write_bytes(b"not a model")
    current = tmp_path / "current"
    current.symlink_to(worker_model)
    clicks = sample_clicks(3_000, f"roll-{settings.app_id}")
    s = dataclasses.replace(settings, **TEST_SHAPES, model_poll_s=1, inference_process=inference_process)
    worker = WorkerProcess(worker_env(s, current, tmp_path / "w" / "state"), tmp_path / "w" / "worker.log")

    def repoint(target: Path) -> None:  # what an operator does: swap a symlink atomically
        tmp = tmp_path / "next"
        tmp.symlink_to(target)
        tmp.replace(current)

    def wait_for(line: str) -> None:
        deadline = time.monotonic() + 120
        while line not in worker.log():
            assert time.monotonic() < deadline, f"no {line!r} in the worker log:\n{worker.log()[-3000:]}"
            time.sleep(0.5)

    def predicted_versions(batch: list[Click]) -> set[str]:
        assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in batch]).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in batch))
        return {p.model_version for c in batch for p in found[c.event_id]}

    try:
        worker.start()
        ensure_topics(settings, [settings.clicks_topic])
        assert predicted_versions(clicks[:1_000]) == {first}
        repoint(second_dir)
        wait_for(f"model {second} is warm: switching to it at the next batch")
        assert predicted_versions(clicks[1_000:2_000]) == {second}
        wait_for(f"switched from model {first} to {second}")
        repoint(broken)
        wait_for("refused the model at")
        assert predicted_versions(clicks[2_000:]) == {second}
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.stop(signal.SIGTERM)
