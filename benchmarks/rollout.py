"""Rollout: what switching a serving worker to a new model version costs, in memory and in pauses.

A worker serves the model through a symlink while clicks arrive at a steady rate (``--rate``); after
``--settle-s`` the symlink is pointed at a copy of the same artifact under a new version, and the worker's
model watch (``CLICKSTREAM_MODEL_POLL_S``, 1 s here) loads it beside the serving one and switches between two
batches. The summed RSS of the worker's processes (the worker, its inference process and, during the rollout,
the new one) is sampled every 0.1 s. Reported: the peak before the swap, the peak during the rollout (from
the swap until the old engine is gone), seconds from the swap to the switch, and the longest gap between two
predictions while clicks kept arriving (their record timestamps), against the longest gap before the swap.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import model_dir, process_tree, run_settings, status_mb, table, write_results
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import consumer_at, ensure_topics, send_all
from core.records import Click
from schemas.codec import RecordCodec

STATE = Path(".state/bench")
CLICK = RecordCodec(Click)
SWITCHED = "switched from model"


def rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += status_mb(pid, "VmRSS")
        except (OSError, StopIteration):
            continue  # a process that just ended
    return total


def second_version(model: Path, root: Path) -> Path:
    """A copy of the artifact that differs only in its manifest's version: the same network, loaded anew."""
    copy = root / "model-b"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(model, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] += "-rollout"
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return copy


def largest_gap(stamps: list[int], start_ms: float, end_ms: float) -> float:
    """Longest time in seconds between two consecutive prediction timestamps within [start, end]."""
    inside = sorted(t for t in stamps if start_ms <= t <= end_ms)
    return max((b - a for a, b in zip(inside, inside[1:])), default=0) / 1000


def measure(model: Path, rate: float, settle_s: float, timeout_s: float) -> dict[str, Any]:
    s = run_settings("rollout")
    root = (STATE / s.app_id).resolve()
    root.mkdir(parents=True, exist_ok=True)
    link = root / "serving"
    link.symlink_to(model.resolve(), target_is_directory=True)
    candidate = second_version(model, root)
    ensure_topics(s, [s.clicks_topic, s.predictions_topic])
    env = worker_env(s, link, root / "data", CLICKSTREAM_MODEL_POLL_S="1")
    worker = WorkerProcess(env, root / "worker.log").start()
    stop = threading.Event()
    stamps: list[int] = []

    start_ms = int(time.time() * 1000)
    clicks = [Click(event_id=f"r-{i}", user_id=f"rollout-user-{i % 50}", item_id="1", category_id=str(i % 7),
                    event_type="view", event_time_ms=start_ms + int(i * 1000 / rate))
              for i in range(int(rate * (settle_s + timeout_s + 10)))]
    messages = [(c.key, CLICK.encode(c), c.event_time_ms) for c in clicks]

    def produce() -> None:  # paced; a daemon thread, left behind when the measurement ends
        send_all(s, s.clicks_topic, messages, due_s=lambda i, _ts: i / rate)

    def consume() -> None:
        consumer = consumer_at(s, s.predictions_topic, from_beginning=True)
        try:
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    stamps.extend(r.timestamp for r in records)
        finally:
            consumer.close()

    threads = [threading.Thread(target=produce, daemon=True), threading.Thread(target=consume, daemon=True)]
    for t in threads:
        t.start()
    before, during = 0.0, 0.0
    try:
        settle_end = time.monotonic() + settle_s
        while time.monotonic() < settle_end:
            before = max(before, rss_mb(process_tree(worker.pid)))
            time.sleep(0.1)
        swapped_ms = time.time() * 1000
        swapped = time.monotonic()
        tmp = root / "serving.new"
        tmp.symlink_to(candidate, target_is_directory=True)
        os.replace(tmp, link)  # atomic, as an operator's `ln -sfn` + `mv -T` would do it
        switch_s = None
        while time.monotonic() - swapped < timeout_s:
            during = max(during, rss_mb(process_tree(worker.pid)))
            if switch_s is None and SWITCHED in worker.log():
                switch_s = time.monotonic() - swapped
                settled = time.monotonic() + 3.0  # the old engine closes; keep sampling a little
            if switch_s is not None and time.monotonic() > settled:
                break
            time.sleep(0.1)
        if switch_s is None:
            raise TimeoutError(f"the worker did not switch within {timeout_s:.0f}s; its log: {root / 'worker.log'}")
        after = rss_mb(process_tree(worker.pid))
        time.sleep(2.0)  # predictions of the last clicks reach the consumer
    finally:
        stop.set()
        threads[1].join(timeout=10)
        worker.stop()
    end_ms = swapped_ms + (switch_s + 3.0) * 1000
    return {"rss_before_mb": before, "rss_peak_during_mb": during, "rss_after_mb": after, "switch_s": switch_s,
            "largest_gap_before_s": largest_gap(stamps, swapped_ms - settle_s * 1000 + 5000, swapped_ms),
            "largest_gap_during_s": largest_gap(stamps, swapped_ms, end_ms), "predictions": len(stamps)}


def main(argv: list[str] | None = None, name: str = "rollout") -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--rate", type=float, default=200.0, help="clicks per second (200)")
    parser.add_argument("--settle-s", type=float, default=20.0, help="serving time before the swap (20)")
    parser.add_argument("--timeout-s", type=float, default=180.0)
    args = parser.parse_args(argv)
    model = model_dir(args.model)
    r = measure(model, args.rate, args.settle_s, args.timeout_s)
    print(table([["peak RSS, all processes (MB)", r["rss_before_mb"], r["rss_peak_during_mb"], r["rss_after_mb"]],
                 ["longest gap between predictions (s)", r["largest_gap_before_s"], r["largest_gap_during_s"], ""]],
                ["", "serving", "rollout", "after"]))
    print(f"swap to switch: {r['switch_s']:.1f}s ({r['predictions']} predictions; clicks at {args.rate:g}/s)")
    write_results(name, {"model": str(model), "rate": args.rate, **r})
