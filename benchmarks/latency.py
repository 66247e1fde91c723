"""Click-to-prediction latency at fixed click rates (open loop), with the worker's own timing split."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, model_dir, run_settings, table, write_results
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, topic_size
from core.records import Click, Prediction
from core.settings import Settings
from core.synthetic import synthetic_clicks
from schemas.codec import RecordCodec


async def one_rate(s: Settings, rate: int, seconds: float, users: int) -> dict[str, Any]:
    """Send clicks at ``rate``/s for ``seconds`` (stamped with their send time); collect their predictions."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    click_codec, prediction_codec = RecordCodec(Click), RecordCodec(Prediction)
    producer = AIOKafkaProducer(**s.aiokafka_config(), acks="all", linger_ms=1)
    consumer = AIOKafkaConsumer(s.predictions_topic, **s.aiokafka_config(), auto_offset_reset="latest",
                                group_id=f"latency-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)
    await consumer.start()
    await producer.start()
    await asyncio.sleep(2)  # let the consumer settle at the end of the topic
    total = int(rate * seconds)
    source = synthetic_clicks(users, total, seed=rate, id_prefix=f"lat{rate}-{uuid.uuid4().hex[:4]}")
    latencies: list[float] = []
    timings: list[dict[str, float]] = []

    async def collect() -> None:
        deadline = None
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for records in batches.values():
                for r in records:
                    p = prediction_codec.decode(r.value)
                    latencies.append(now_ms - p.event_time_ms)
                    if p.timing:
                        timings.append(dataclasses.asdict(p.timing))
            if deadline is None and sent_all.is_set():
                deadline = time.monotonic() + 15
            if deadline is not None and time.monotonic() > deadline:
                return

    sent_all = asyncio.Event()
    collector = asyncio.create_task(collect())
    start = time.perf_counter()
    for i, click in enumerate(source):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        click = dataclasses.replace(click, event_time_ms=int(time.time() * 1000))
        await producer.send(s.clicks_topic, key=click.key, value=click_codec.encode(click),
                            timestamp_ms=click.event_time_ms)
    await producer.flush()
    achieved = total / (time.perf_counter() - start)
    sent_all.set()
    await collector
    await producer.stop()
    await consumer.stop()
    lat = np.asarray(latencies)
    split = {k: float(np.mean([t[k] for t in timings])) for k in ("batch_wait_ms", "window_ms", "inference_ms")} \
        if timings else {}
    split["batch_size"] = float(np.mean([t["batch_size"] for t in timings])) if timings else 0.0
    return {"rate": rate, "achieved_rate": achieved, "sent": total, "received": len(lat),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()), "worker_split_mean": split}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks latency", description=__doc__)
    parser.add_argument("--rates", default="1000,5000,10000", help="clicks/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each rate")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--drain-timeout-s", type=float, default=180.0,
                        help="longest wait for the worker to catch up before the next rate")
    args = parser.parse_args(argv)
    model = model_dir(args.model)
    s = run_settings("lat")
    ensure_topics(s, [s.clicks_topic, s.predictions_topic, s.dead_letter_topic])
    state = Path(".state/bench") / s.app_id
    worker = WorkerProcess(worker_env(s, model, state / "data"), state / "worker.log").start()
    results, sent = [], 0
    try:
        for r in args.rates.split(","):
            results.append(asyncio.run(one_rate(s, int(r), args.seconds, args.users)))
            sent += results[-1]["sent"]
            drained = time.monotonic() + args.drain_timeout_s  # a backlog must not spill into the next rate
            while topic_size(s, s.predictions_topic) < sent and time.monotonic() < drained:
                time.sleep(1)
    finally:
        worker.stop()
    print(table([[r["rate"], r["achieved_rate"], r["received"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"],
                  r["worker_split_mean"].get("batch_size", 0), r["worker_split_mean"].get("batch_wait_ms", 0),
                  r["worker_split_mean"].get("window_ms", 0), r["worker_split_mean"].get("inference_ms", 0)]
                 for r in results],
                ["rate", "achieved", "received", "p50 ms", "p95 ms", "p99 ms", "max ms", "batch", "wait ms",
                 "window ms", "infer ms"]))
    write_results("latency", {"model": str(model), "seconds_per_rate": args.seconds, "results": results})
    _chart(results, RESULTS / "latency.png")


def _chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(results))
    for j, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        ax.bar(x + (j - 1) * 0.25, [r[q] for r in results], 0.25, label=q.removesuffix("_ms"))
    ax.axhline(50, color="k", ls="--", lw=1, label="50 ms target (p99 at 5k/s)")
    ax.set_xticks(x, [f"{r['rate']:,}/s" for r in results])
    ax.set_ylabel("click -> prediction (ms)")
    ax.set_title("latency at fixed click rates, one worker")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}")
