"""Scale-out: the same clicks through one worker, then through two worker processes of one app, in one run.

Each configuration gets fresh topics (4 partitions). The workers start first and the clicks are produced once
every worker serves /ready and the group has settled, so both configurations are timed from the first click
sent to the last prediction written. Reported per configuration: clicks/s, each worker's share of the clicks
(its ``clickstream_clicks_total``) and the CPU seconds each worker used, its inference process included. The
broker, the producer and the workers share the machine's cores: on 2 cores, two workers cannot show 2x.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    bar_chart,
    model_dir,
    process_tree,
    run_settings,
    table,
    tree_cpu_seconds,
    tree_cpu_used,
    write_results,
)
from benchmarks.throughput import STATE, load_clicks, wait_for_output
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, send_all
from core.records import Click
from core.settings import Settings
from schemas.codec import RecordCodec

FIRST_WEB_PORT = 6171

def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def wait_settled(ports: list[int], timeout_s: float = 120.0, quiet_s: float = 5.0) -> None:
    """Until every worker reports ready and stays so for ``quiet_s`` (the group is not rebalancing)."""
    deadline = time.monotonic() + timeout_s
    since = None
    while time.monotonic() < deadline:
        ready = all(metric(p, "clickstream_ready") == 1 for p in ports)
        since = (since or time.monotonic()) if ready else None
        if since and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise TimeoutError(f"workers on ports {ports} not ready within {timeout_s:.0f}s")


def run(s: Settings, model: Path, clicks: list[Click], workers: int, timeout_s: float) -> dict[str, Any]:
    ensure_topics(s, [s.clicks_topic, s.predictions_topic])
    ports = [FIRST_WEB_PORT + i for i in range(workers)]
    state = STATE / s.app_id
    processes = [WorkerProcess(worker_env(s, model, state / f"data-{i}", CLICKSTREAM_PREDICTOR_WARM="all"),
                               state / f"worker-{i}.log", web_port=port) for i, port in enumerate(ports)]
    try:
        for p in processes:
            p.start()
        wait_settled(ports)
        # each worker and its inference process
        cpu_before = [tree_cpu_seconds(process_tree(p.pid)) for p in processes]
        codec = RecordCodec(Click)
        start = time.perf_counter()
        sent = send_all(s, s.clicks_topic, [(c.key, codec.encode(c), c.event_time_ms) for c in clicks])
        if sent.failed:
            raise SystemExit(f"{sent.failed:,} clicks were not accepted by the broker: {sent.first_error}")
        wait_for_output(s, s.predictions_topic, len(clicks), timeout_s)
        seconds = time.perf_counter() - start
        cpu = [tree_cpu_used(before) for before in cpu_before]
        shares = [metric(port, "clickstream_clicks_total") for port in ports]
    finally:
        for p in processes:
            p.stop()
    return {"workers": workers, "seconds": seconds, "rate": len(clicks) / seconds, "clicks_per_worker": shares,
            "cpu_s_per_worker": cpu}


def main(argv: list[str] | None = None, name: str = "scaleout") -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=__doc__)
    parser.add_argument("--clicks", type=int, default=60_000, help="Taobao sample clicks (synthetic without the data)")
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args(argv)

    model = model_dir(args.model)
    results, rows = [], []
    for workers in (1, 2):
        s = dataclasses.replace(run_settings("scale"), partitions=4)
        clicks = load_clicks(args.clicks, 20_000, False, s.app_id)
        r = run(s, model, clicks, workers, args.timeout_s)
        results.append(r)
        split = " / ".join(f"{c:,.0f}" for c in r["clicks_per_worker"])
        cpu = " / ".join(f"{c:.0f}" for c in r["cpu_s_per_worker"])
        rows.append([f"{workers} worker{'s' if workers > 1 else ''}", r["rate"], r["rate"] / results[0]["rate"], split, cpu])
        print(f"{workers} worker(s): {r['rate']:,.0f} clicks/s; clicks per worker {split}; CPU s per worker {cpu}")
    print(table(rows, ["configuration", "clicks/s", "x one worker", "clicks per worker", "CPU s per worker"]))
    write_results(name, {"clicks": args.clicks, "model": str(model), "runs": results})
    bar_chart(RESULTS / f"{name}.png", f"{args.clicks:,} clicks, 4 partitions (clicks/s)",
              [r[0] for r in rows], [r[1] for r in rows], "clicks/s")
