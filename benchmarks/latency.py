"""Click-to-prediction latency at fixed click rates (open loop) from ~10 % to ~100 % of the worker's capacity,
with p50, p99, p99.9 and the worker's own timing split. The load generator (this process), the collector and
the worker each run in a process of their own."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
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


def collect(s: Settings, total: int, ready: Any, done_sending: Any, out: Any) -> None:
    """The collector, in a process of its own: read predictions from the end of the topic, note each one's
    latency (arrival minus the click's event time, which the generator stamped at sending), split at the
    prediction's ``predicted_at_ms`` into the way in (broker, the worker's fetch and batch) and the way out
    (the worker's send, broker, this consumer's fetch): one machine, one clock."""
    async def run() -> None:
        from aiokafka import AIOKafkaConsumer

        codec = RecordCodec(Prediction)
        consumer = AIOKafkaConsumer(s.predictions_topic, **s.aiokafka_config(), auto_offset_reset="latest",
                                    group_id=f"latency-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)
        await consumer.start()
        await consumer.getmany(timeout_ms=1000)
        for tp in consumer.assignment():  # resolve the end offsets before the first click is sent
            await consumer.position(tp)
        ready.set()
        latencies: list[float] = []
        ways: list[tuple[float, float]] = []  # (click -> predicted, predicted -> arrival) ms
        timings: list[tuple[float, float, float, float]] = []
        deadline = None
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for records in batches.values():
                for r in records:
                    p = codec.decode(r.value)
                    latencies.append(now_ms - p.event_time_ms)
                    ways.append((p.predicted_at_ms - p.event_time_ms, now_ms - p.predicted_at_ms))
                    if p.timing:
                        t = p.timing
                        timings.append((t.batch_size, t.batch_wait_ms, t.window_ms, t.inference_ms))
            if deadline is None and done_sending.is_set():
                deadline = time.monotonic() + 20
            if deadline is not None and time.monotonic() > deadline:
                break
        await consumer.stop()
        out.put((latencies, ways, timings))

    asyncio.run(run())


async def generate(s: Settings, rate: int, total: int, users: int) -> float:
    """The load generator: ``total`` clicks at ``rate``/s, each stamped with its send time; the achieved rate."""
    from aiokafka import AIOKafkaProducer

    codec = RecordCodec(Click)
    producer = AIOKafkaProducer(**s.aiokafka_config(), acks="all", linger_ms=1)
    await producer.start()
    # the clicks and the topic's metadata ready before the clock starts (building the synthetic shoppers takes
    # ~0.4 s): otherwise the first clicks leave in one burst, a generator artifact and not the worker's latency
    await producer.partitions_for(s.clicks_topic)
    source = list(synthetic_clicks(users, total, seed=rate, id_prefix=f"lat{rate}-{uuid.uuid4().hex[:4]}"))
    start = time.perf_counter()
    for i, click in enumerate(source):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        click = dataclasses.replace(click, event_time_ms=int(time.time() * 1000))
        await producer.send(s.clicks_topic, key=click.key, value=codec.encode(click), timestamp_ms=click.event_time_ms)
    await producer.flush()
    achieved = total / (time.perf_counter() - start)
    await producer.stop()
    return achieved


def one_rate(s: Settings, rate: int, seconds: float, users: int) -> dict[str, Any]:
    """Send clicks at ``rate``/s for ``seconds`` from this process; collect predictions in another one."""
    ctx = multiprocessing.get_context("spawn")
    total = int(rate * seconds)
    ready, done_sending, out = ctx.Event(), ctx.Event(), ctx.Queue()
    collector = ctx.Process(target=collect, args=(s, total, ready, done_sending, out), daemon=True)
    collector.start()
    if not ready.wait(60):
        raise RuntimeError("the collector did not start")
    achieved = asyncio.run(generate(s, rate, total, users))
    done_sending.set()
    latencies, ways, timings = out.get(timeout=600)
    collector.join(30)
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    way = np.asarray(ways) if ways else np.full((1, 2), np.nan)
    t = np.asarray(timings) if timings else np.zeros((0, 4))
    split = {k: float(t[:, j].mean()) if len(t) else 0.0
             for j, k in enumerate(("batch_size", "batch_wait_ms", "window_ms", "inference_ms"))}
    return {"rate": rate, "achieved_rate": achieved, "sent": total, "received": len(latencies),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "p999_ms": float(np.percentile(lat, 99.9)),
            "max_ms": float(np.max(lat)), "in_p50_ms": float(np.percentile(way[:, 0], 50)),
            "in_p99_ms": float(np.percentile(way[:, 0], 99)), "out_p50_ms": float(np.percentile(way[:, 1], 50)),
            "out_p99_ms": float(np.percentile(way[:, 1], 99)), "worker_split_mean": split}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks latency", description=__doc__)
    parser.add_argument("--rates", help="clicks/s, comma-separated (default: --fractions of --capacity)")
    parser.add_argument("--capacity", type=float, default=2000.0,
                        help="the worker's clicks/s from `python -m benchmarks throughput` on this machine")
    parser.add_argument("--fractions", default="0.1,0.25,0.5,0.75,1.0", help="rates as fractions of --capacity")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each rate")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--drain-timeout-s", type=float, default=180.0,
                        help="longest wait for the worker to catch up before the next rate")
    args = parser.parse_args(argv)
    rates = ([int(r) for r in args.rates.split(",")] if args.rates else
             [max(1, int(args.capacity * float(f))) for f in args.fractions.split(",")])
    model = model_dir(args.model)
    s = run_settings("lat")
    ensure_topics(s, [s.clicks_topic, s.predictions_topic, s.dead_letter_topic])
    state = Path(".state/bench") / s.app_id
    # every predictor shape compiled before the first click: steady-state latency, not the warm-up
    env = worker_env(s, model, state / "data", CLICKSTREAM_PREDICTOR_WARM="all")
    worker = WorkerProcess(env, state / "worker.log").start()
    results, sent = [], 0
    try:
        for rate in rates:
            results.append(one_rate(s, rate, args.seconds, args.users))
            sent += results[-1]["sent"]
            drained = time.monotonic() + args.drain_timeout_s  # a backlog must not spill into the next rate
            while topic_size(s, s.predictions_topic) < sent and time.monotonic() < drained:
                time.sleep(1)
    finally:
        worker.stop()
    print(table([[r["rate"], r["achieved_rate"], r["received"], r["p50_ms"], r["p99_ms"], r["p999_ms"], r["max_ms"],
                  r["in_p50_ms"], r["in_p99_ms"], r["out_p50_ms"], r["out_p99_ms"],
                  r["worker_split_mean"]["batch_size"], r["worker_split_mean"]["batch_wait_ms"],
                  r["worker_split_mean"]["window_ms"], r["worker_split_mean"]["inference_ms"]] for r in results],
                ["rate", "achieved", "received", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "in p50", "in p99",
                 "out p50", "out p99", "batch", "wait ms", "window ms", "infer ms"]))
    under = [r["rate"] for r in results if r["p99_ms"] <= 100 and r["received"] == r["sent"]]
    print(f"highest rate with p99 <= 100 ms: {max(under) if under else 'none'} clicks/s")
    write_results("latency", {"model": str(model), "seconds_per_rate": args.seconds, "capacity": args.capacity,
                              "results": results})
    _chart(results, RESULTS / "latency.png")


def _chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    rates = [r["rate"] for r in results]
    for q, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        ax.plot(rates, [r[q] for r in results], "o-", label=label)
    ax.axhline(100, color="k", ls="--", lw=1, label="100 ms")
    ax.set_yscale("log")
    ax.set_xlabel("clicks/s sent (open loop)")
    ax.set_ylabel("click -> prediction (ms)")
    ax.set_title("latency vs rate, one worker (generator and collector in their own processes)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}")
