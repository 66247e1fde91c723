"""End-to-end throughput of one worker on the real broker, next to its ceilings measured on the same clicks:
raw aiokafka consume -> produce (client ceiling), a Faust passthrough agent (framework ceiling), and
`model.predict` called once per click (the seed's way). Also the worker's peak RSS and its RocksDB bytes per
user (``python -m benchmarks state`` runs this with 100k synthetic users)."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    bar_chart,
    cpu_seconds,
    local_broker_pid,
    model_dir,
    peak_rss_mb,
    process_tree,
    run_settings,
    table,
    tree_cpu_seconds,
    tree_cpu_used,
    write_results,
)
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, send_all, topic_size
from core.records import Click
from core.settings import Settings
from model.artifact import read_manifest
from schemas.codec import RecordCodec

STATE = Path(".state/bench")


def load_clicks(count: int, users: int, synthetic: bool, run: str) -> list[Click]:
    """Taobao sample clicks with fresh ids (repeated with new user ids when more are asked), or synthetic."""
    from core.logs import read_log
    from core.synthetic import synthetic_clicks

    data = Path(os.environ.get("CLICKSTREAM_DATA_DIR", "../shared/data")) / "taobao" / "UserBehavior-sample.csv"
    if synthetic or not data.is_file():
        # ~51 ms of event time per click: start far enough back that the last click is not in the future
        # (the broker refuses timestamps more than an hour ahead)
        return list(synthetic_clicks(users, count, seed=1, id_prefix=run, start_ms=int(time.time() * 1000) - 60 * count))
    clicks: list[Click] = []
    for lap in itertools.count():
        for c in read_log(data, "taobao", id_prefix=f"{run}-{lap}"):
            if lap:
                c = dataclasses.replace(c, user_id=f"{c.user_id}-{lap}")
            clicks.append(c)
            if len(clicks) == count:
                return clicks
    raise AssertionError("unreachable")


def wait_for_output(s: Settings, topic: str, count: int, timeout_s: float) -> float:
    """Seconds until ``topic`` holds ``count`` records (polled every 0.2 s)."""
    start = time.perf_counter()
    while topic_size(s, topic) < count:
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"{topic}: fewer than {count} records after {timeout_s:.0f}s")
        time.sleep(0.2)
    return time.perf_counter() - start


def run_worker(s: Settings, model: Path, count: int, app: str, name: str, timeout_s: float,
               **env_extra: str) -> dict[str, Any]:
    """Start a worker on pre-loaded clicks; seconds from its ready line until ``count`` outputs exist."""
    state = STATE / s.app_id
    # every predictor shape compiled before the first click (the tensorflow runtime): steady-state throughput
    env = worker_env(s, model, state / "data", CLICKSTREAM_PREDICTOR_WARM="all", **env_extra)
    started = time.perf_counter()
    worker = WorkerProcess(env, state / f"{name}.log", app=app).start()
    ready_s = time.perf_counter() - started
    broker = local_broker_pid()
    try:
        processes = process_tree(worker.pid)  # the worker and its inference process, if it has one
        cpu_before = tree_cpu_seconds(processes), cpu_seconds(broker) if broker else 0.0
        seconds = wait_for_output(s, s.predictions_topic, count, timeout_s)
        worker_cpu = tree_cpu_used(cpu_before[0])
        broker_cpu = cpu_seconds(broker) - cpu_before[1] if broker else None
        rss = [peak_rss_mb(p) for p in processes]
    finally:
        worker.stop()
    disk = sum(p.stat().st_size for p in (state / "data").rglob("*") if p.is_file())
    # CPU per click over the timed part (the broker's: None when it does not run on this machine); the peak RSS
    # is the sum of the worker's processes' peaks
    return {"seconds": seconds, "rate": count / seconds, "ready_s": ready_s, "peak_rss_mb": sum(rss),
            "peak_rss_mb_per_process": rss,
            "state_bytes": disk, "worker_cpu_us_per_click": worker_cpu / count * 1e6,
            "broker_cpu_us_per_click": broker_cpu / count * 1e6 if broker_cpu is not None else None}


async def aiokafka_passthrough(s: Settings, source: str, target: str, count: int) -> float:
    """Client ceiling: consume every click and produce it again, in record batches; seconds to all acked."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(source, **s.aiokafka_config(), group_id=f"ceiling-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000)
    producer = AIOKafkaProducer(**s.aiokafka_config(), acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await consumer.start()
    await producer.start()
    await producer.partitions_for(target)  # metadata of the target before the first batch
    try:
        seen, futures, start = 0, [], None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            start = start or time.perf_counter()
            for tp, records in batches.items():
                batch = producer.create_batch()
                for r in records:
                    if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                        batch.close()
                        futures.append(await producer.send_batch(batch, target, partition=tp.partition))
                        batch = producer.create_batch()
                        batch.append(key=r.key, value=r.value, timestamp=None)
                batch.close()
                futures.append(await producer.send_batch(batch, target, partition=tp.partition))
                seen += len(records)
        await asyncio.gather(*futures)
        return time.perf_counter() - (start or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()


def predict_per_click(model: Path, clicks: list[Click], window: int) -> float:
    """The seed's way: `model.predict` once per click, on that click's window (clicks/s)."""
    import keras
    import numpy as np

    from core.events import event_type_code
    from model import network as _registers_custom_layers  # noqa: F401  (load_model needs them)
    from model.artifact import read_manifest
    from model.features import FeatureSpec, encode_windows, window_index

    spec = FeatureSpec.from_json(read_manifest(model)["features"])
    network = keras.saving.load_model(model / "model.keras")
    history: dict[str, list[Click]] = {}
    start = None
    for i, c in enumerate(clicks):
        w = history.setdefault(c.user_id, [])
        w.append(c)
        del w[:-window]
        cats = np.asarray([e.category_id for e in w], dtype=object)
        x = encode_windows(spec.category_index(cats), np.unique(cats, return_inverse=True)[1],
                           np.asarray([event_type_code(e.event_type) for e in w]),
                           np.asarray([e.event_time_ms for e in w]),
                           window_index(np.array([len(w)]), np.array([0]), window), spec)
        network.predict([x["category"], x["event_type"], x["steps"]], verbose=0)
        if i == 0:
            start = time.perf_counter()  # the first call builds the predict function
    assert start is not None
    return (len(clicks) - 1) / (time.perf_counter() - start)


def main(argv: list[str] | None = None, name: str = "throughput") -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=__doc__)
    parser.add_argument("--clicks", type=int, default=200_000, help="clicks pre-loaded into the topic")
    parser.add_argument("--synthetic", action="store_true", help="synthetic shoppers instead of the Taobao sample")
    parser.add_argument("--users", type=int, default=20_000, help="synthetic shoppers")
    parser.add_argument("--predict-clicks", type=int, default=300, help="clicks for the model.predict agent")
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--skip-ceilings", action="store_true", help="measure the worker only")
    parser.add_argument("--runtimes", default="numpy,tensorflow",
                        help="serving runtimes to run the worker with, one run each, the first one the default "
                             "that the ratios are of (CLICKSTREAM_RUNTIME)")
    parser.add_argument("--modes", default="process",
                        help="where the inference engine runs: process, thread or both (process,thread); "
                             "CLICKSTREAM_INFERENCE_PROCESS")
    parser.add_argument("--ids", default="raw",
                        help="how the worker keys users: raw, pseudonymous (CLICKSTREAM_USER_ID_KEY) or both "
                             "(raw,pseudonymous)")
    args = parser.parse_args(argv)

    model = model_dir(args.model)
    s = run_settings("bench")
    run = s.app_id.removeprefix("bench-")
    clicks = load_clicks(args.clicks, args.users, args.synthetic, run)
    users = len({c.user_id for c in clicks})
    ensure_topics(s, [s.clicks_topic])
    codec = RecordCodec(Click)
    sent = send_all(s, s.clicks_topic, [(c.key, codec.encode(c), c.event_time_ms) for c in clicks])
    if sent.failed:
        raise SystemExit(f"{sent.failed:,} clicks were not accepted by the broker: {sent.first_error}")
    print(f"pre-loaded {sent.sent:,} clicks of {users:,} users into {s.clicks_topic} ({sent.rate:,.0f}/s)")

    workers: dict[str, dict[str, Any]] = {}
    for runtime, mode, ids in itertools.product(args.runtimes.split(","), args.modes.split(","), args.ids.split(",")):
        label = f"{runtime} runtime, inference {mode}" + (", pseudonymous ids" if ids == "pseudonymous" else "")
        suffix = f"{runtime}-{mode}" + ("-pseudonymous" if ids == "pseudonymous" else "")
        worker_s = dataclasses.replace(s, app_id=f"{s.app_id}-{suffix}", predictions_topic=f"{s.predictions_topic}-{suffix}",
                                       user_id_key="benchmark-secret" if ids == "pseudonymous" else None)
        ensure_topics(worker_s, [worker_s.predictions_topic])
        workers[label] = run_worker(worker_s, model, len(clicks), "streams.app", f"worker-{suffix}",
                                    args.timeout_s, CLICKSTREAM_RUNTIME=runtime,
                                    CLICKSTREAM_INFERENCE_PROCESS=str(mode == "process").lower())
    ours = next(iter(workers.values()))
    rows = [[f"worker, {label}", r["rate"], ours["rate"] / r["rate"]] for label, r in workers.items()]
    result: dict[str, Any] = {"clicks": len(clicks), "users": users, "synthetic": args.synthetic,
                              "model": str(model), "worker": ours, "workers": workers,
                              "state_bytes_per_user": ours["state_bytes"] / users}
    if not args.skip_ceilings:
        ensure_topics(s, [f"bench-raw-{run}"])
        raw_s = asyncio.run(aiokafka_passthrough(s, s.clicks_topic, f"bench-raw-{run}", len(clicks)))
        faust_s = dataclasses.replace(s, predictions_topic=f"bench-faust-{run}", app_id=f"bench-faust-{run}")
        ensure_topics(faust_s, [faust_s.predictions_topic])
        framework = run_worker(faust_s, model, len(clicks), "benchmarks.passthrough_app", "passthrough",
                               args.timeout_s)
        predict_rate = predict_per_click(model, clicks[: args.predict_clicks], read_manifest(model)["network"]["window_length"])
        ceilings = {"aiokafka_passthrough": len(clicks) / raw_s, "faust_passthrough": framework["rate"],
                    "model_predict_per_click": predict_rate}
        result["ceilings"] = ceilings
        result["ratios"] = {k: ours["rate"] / v for k, v in ceilings.items()}
        rows += [["raw aiokafka consume->produce", ceilings["aiokafka_passthrough"], result["ratios"]["aiokafka_passthrough"]],
                 ["Faust passthrough agent", ceilings["faust_passthrough"], result["ratios"]["faust_passthrough"]],
                 ["model.predict per click", predict_rate, result["ratios"]["model_predict_per_click"]]]
    print(table(rows, ["pipeline", "clicks/s", "worker / this"]))
    runs = [(f"worker, {label}", r) for label, r in workers.items()]
    runs += [("Faust passthrough", framework)] if not args.skip_ceilings else []
    for label, r in runs:
        broker = (f", the broker {r['broker_cpu_us_per_click']:,.0f} µs" if r["broker_cpu_us_per_click"] is not None
                  else " (the broker runs elsewhere: not measured)")
        print(f"CPU per click, {label}: its processes {r['worker_cpu_us_per_click']:,.0f} µs{broker} "
              f"({r['worker_cpu_us_per_click'] * r['rate'] / 1e6:.2f} cores at {r['rate']:,.0f} clicks/s)")
    for label, r in workers.items():
        per_process = " + ".join(f"{m:.0f}" for m in r["peak_rss_mb_per_process"])
        print(f"worker, {label}: peak RSS {r['peak_rss_mb']:.0f} MB ({per_process}); start to ready "
              f"{r['ready_s']:.1f} s")
    print(f"RocksDB state {ours['state_bytes'] / 2**20:.1f} MB = {result['state_bytes_per_user']:.0f} bytes per user "
          f"({users:,} users)")
    write_results(name, result)
    bar_chart(RESULTS / f"{name}.png", f"one worker, {len(clicks):,} clicks (clicks/s)",
              [r[0] for r in rows], [r[1] for r in rows], "clicks/s", log=True)
