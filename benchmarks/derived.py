"""Cost of category demand and audiences: one worker's clicks/s with both off, then with both on, on the same
pre-loaded clicks in event-time order (as `clickstream replay` sends history), in one run. Also the share of
the worker's wall time spent in them, from its own metrics (the ``derived`` stage of
``clickstream_stage_seconds``), which the machine's noise moves less than the rates."""
from __future__ import annotations

import argparse
import dataclasses
import re
import socket
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import model_dir, run_settings, table, write_results
from benchmarks.throughput import load_clicks, wait_for_output
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import ensure_topics, send_all
from core.records import Click
from core.settings import Settings
from schemas.codec import RecordCodec

STATE = Path(".state/bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric_values(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in Prometheus text format."""
    return {m.group(1) or "": float(m.group(2))
            for m in re.finditer(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", text, re.MULTILINE)}


def measure(s: Settings, model: Path, count: int, name: str, timeout_s: float) -> dict[str, Any]:
    port = free_port()
    state = STATE / s.app_id
    worker = WorkerProcess(worker_env(s, model, state / "data"), state / f"{name}.log", web_port=port).start()
    try:
        seconds = wait_for_output(s, s.predictions_topic, count, timeout_s)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        worker.stop()
    stages = metric_values(text, "clickstream_stage_seconds_sum")
    derived_s = stages.get('stage="derived"', 0.0)
    return {"seconds": seconds, "rate": count / seconds, "derived_s": derived_s, "derived_share": derived_s / seconds,
            "demand_records": sum(metric_values(text, "clickstream_demand_records_total").values()),
            "audience_entries": sum(metric_values(text, "clickstream_audience_entries_total").values()),
            "demand_late": sum(metric_values(text, "clickstream_demand_late_total").values())}


def main(argv: list[str] | None = None, name: str = "derived") -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=__doc__)
    parser.add_argument("--clicks", type=int, default=30_000, help="clicks pre-loaded into the topic")
    parser.add_argument("--synthetic", action="store_true", help="synthetic shoppers instead of the Taobao sample")
    parser.add_argument("--users", type=int, default=2_000, help="synthetic shoppers")
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=1, help="off/on pairs, alternating; medians are reported")
    args = parser.parse_args(argv)

    model = model_dir(args.model)
    s = run_settings("derived")
    run = s.app_id.removeprefix("derived-")
    clicks = sorted(load_clicks(args.clicks, args.users, args.synthetic, run), key=lambda c: c.event_time_ms)
    ensure_topics(s, [s.clicks_topic])
    codec = RecordCodec(Click)
    sent = send_all(s, s.clicks_topic, [(c.key, codec.encode(c), c.event_time_ms) for c in clicks])
    if sent.failed:
        raise SystemExit(f"{sent.failed:,} clicks were not accepted by the broker: {sent.first_error}")
    span_h = (clicks[-1].event_time_ms - clicks[0].event_time_ms) / 3.6e6
    print(f"pre-loaded {sent.sent:,} clicks in event-time order ({span_h:,.1f} h of event time) into {s.clicks_topic}")
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for i in range(args.repeats):
        for mode in ("off", "on"):
            tag = f"{mode}{i}"
            variant = dataclasses.replace(s, app_id=f"{s.app_id}-{tag}", predictions_topic=f"{s.predictions_topic}-{tag}",
                                          demand_topic=f"derived-demand-{run}-{tag}",
                                          audiences_topic=f"derived-audiences-{run}-{tag}",
                                          demand=mode == "on", audience=mode == "on")
            runs[mode].append(measure(variant, model, len(clicks), f"worker-{tag}", args.timeout_s))
    off, on = (dict(sorted(rs, key=lambda r: r["rate"])[len(rs) // 2]) for rs in (runs["off"], runs["on"]))
    cost = 1 - on["rate"] / off["rate"]
    print(table([["demand + audiences off", off["rate"], off["derived_share"] * 100],
                 ["demand + audiences on", on["rate"], on["derived_share"] * 100]],
                ["worker", "clicks/s", "% of wall time in them"]))
    print(f"cost: {cost * 100:.1f} % of clicks/s (median of {args.repeats} run(s) each; on this shared machine "
          "single runs move by 10-20 %); "
          f"{on['derived_share'] * 100:.1f} % of the worker's wall time by its own clock; "
          f"{on['demand_records']:,.0f} demand records, {on['audience_entries']:,.0f} audience entries, "
          f"{on['demand_late']:,.0f} late (prediction, window) pairs")
    write_results(name, {"clicks": len(clicks), "synthetic": args.synthetic, "model": str(model),
                         "event_time_span_h": span_h, "off": off, "on": on, "cost_of_rate": cost,
                         "runs": runs})
