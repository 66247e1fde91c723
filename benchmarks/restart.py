"""Restart time: from `kill -9` of a worker to the first prediction of a click sent right after the kill,
made by a worker started at once in its place (same state folder, same consumer group). Median over repeats,
optionally also with static group membership (CLICKSTREAM_GROUP_INSTANCE_ID, --static)."""
from __future__ import annotations

import argparse
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, bar_chart, model_dir, run_settings, table, write_results
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import consumer_at, ensure_topics, send_all
from core.records import Click, Prediction
from core.settings import Settings
from schemas.codec import RecordCodec

STATE = Path(".state/bench")
CLICK, PREDICTION = RecordCodec(Click), RecordCodec(Prediction)


def markers(run: str, i: int) -> list[Click]:
    """One click for each of 16 users (all 4 partitions are covered), stamped now."""
    now = int(time.time() * 1000)
    return [Click(event_id=f"{run}-{i}-{u}", user_id=f"restart-user-{u}", item_id="1", category_id="1",
                  event_type="view", event_time_ms=now) for u in range(16)]


def until_predicted(s: Settings, consumer: Any, event_ids: set[str], timeout_s: float) -> float:
    """Poll predictions until every event id was predicted; the monotonic time it happened."""
    missing = set(event_ids)
    deadline = time.monotonic() + timeout_s
    while missing:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(missing)} marker clicks not predicted within {timeout_s:.0f}s")
        for records in consumer.poll(timeout_ms=100).values():
            for r in records:
                missing.discard(PREDICTION.decode(r.value).event_id)
    return time.monotonic()


def measure(s: Settings, model: Path, repeats: int, static: bool, timeout_s: float) -> list[float]:
    state = STATE / s.app_id
    extra = {"CLICKSTREAM_GROUP_INSTANCE_ID": f"{s.app_id}-worker-0"} if static else {}
    env = worker_env(s, model, state / "data", **extra)
    ensure_topics(s, [s.clicks_topic, s.predictions_topic])
    consumer = consumer_at(s, s.predictions_topic, from_beginning=False)
    seconds = []
    worker = WorkerProcess(env, state / "worker-0.log").start()
    try:
        first = markers(s.app_id, 0)
        send_all(s, s.clicks_topic, [(c.key, CLICK.encode(c), c.event_time_ms) for c in first])
        until_predicted(s, consumer, {c.event_id for c in first}, timeout_s)
        for i in range(1, repeats + 1):
            worker.stop(signal.SIGKILL)
            killed = time.monotonic()
            worker = WorkerProcess(env, state / f"worker-{i}.log")
            worker.start(ready_line="")  # started, not waited for: the clock runs from the kill
            clicks = markers(s.app_id, i)
            send_all(s, s.clicks_topic, [(c.key, CLICK.encode(c), c.event_time_ms) for c in clicks])
            seconds.append(until_predicted(s, consumer, {c.event_id for c in clicks}, timeout_s) - killed)
            print(f"{'static' if static else 'dynamic'} membership, restart {i}: {seconds[-1]:.1f}s")
    finally:
        worker.stop(signal.SIGTERM)
        consumer.close()
    return seconds


def main(argv: list[str] | None = None, name: str = "restart") -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--static", action="store_true",
                        help="also measure with static membership (seen here: a second restart never got its "
                             "partitions back)")
    args = parser.parse_args(argv)
    model = model_dir(args.model)
    results: dict[str, Any] = {"repeats": args.repeats, "model": str(model)}
    rows = []
    for static in (False, True) if args.static else (False,):
        s = run_settings("restart")
        seconds = measure(s, model, args.repeats, static, args.timeout_s)
        label = "static membership" if static else "dynamic membership"
        results[label] = {"seconds": seconds, "median_s": statistics.median(seconds)}
        rows.append([label, statistics.median(seconds), min(seconds), max(seconds)])
    print(table(rows, ["", "median s", "min s", "max s"]))
    bar_chart(RESULTS / "restart.png", "kill -9 -> first prediction of a new click (median)",
              [r[0] for r in rows], [r[1] for r in rows], "seconds")
    write_results(name, results)
