"""Issue 12's performance targets against the latest `throughput`, `latency` and `predictor` results (run those
first, in one session: `make bench` does): each target met, or by how much it is missed. Reads results/*.json
only; measures nothing itself."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, table, write_results

WORKER_VS_PASSTHROUGH = 0.80
P99_MS, P99_RATE = 100.0, 2_500.0
P99_AT_1000_MS, RATE_1000 = 50.0, 1_000.0
PREDICTOR_WINDOWS_PER_S = 20_000.0


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _verdict(met: bool, factor: float) -> str:
    return "met" if met else f"missed by {factor:.1f}x"


def targets(results: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    throughput, latency, predictor = (_load(results, n) for n in ("throughput", "latency", "predictor"))
    if throughput and "faust_passthrough" in throughput.get("ratios", {}):
        worker, passthrough = throughput["worker"]["rate"], throughput["ceilings"]["faust_passthrough"]
        ratio = worker / passthrough
        rows.append({"target": "worker >= 80 % of the Faust passthrough's clicks/s",
                     "measured": f"{worker:,.0f} vs {passthrough:,.0f} clicks/s = {ratio:.0%}",
                     "verdict": _verdict(ratio >= WORKER_VS_PASSTHROUGH, WORKER_VS_PASSTHROUGH / ratio)})
    else:
        rows.append({"target": "worker >= 80 % of the Faust passthrough's clicks/s",
                     "measured": "no throughput result with ceilings (run `throughput` without --skip-ceilings)",
                     "verdict": "not measured"})
    if latency and latency.get("results"):
        curve = sorted(latency["results"], key=lambda r: r["rate"])
        within = [r["rate"] for r in curve if r["p99_ms"] <= P99_MS]
        best = max(within, default=0)
        top = "(the highest rate measured)" if best and best == curve[-1]["rate"] else ""
        rows.append({"target": f"highest rate with p99 <= {P99_MS:.0f} ms >= {P99_RATE:,.0f} clicks/s",
                     "measured": f"{best:,} clicks/s {top}".strip() if best else "none of the rates measured",
                     "verdict": _verdict(best >= P99_RATE, P99_RATE / best) if best else "missed"})
        at = next((r for r in curve if r["rate"] >= RATE_1000), None)
        rows.append({"target": f"p99 <= {P99_AT_1000_MS:.0f} ms at {RATE_1000:,.0f} clicks/s",
                     "measured": (f"p99 {at['p99_ms']:,.1f} ms at {at['rate']:,} clicks/s (the lowest rate measured "
                                  f">= {RATE_1000:,.0f})") if at else "no rate >= 1,000 clicks/s measured",
                     "verdict": _verdict(at["p99_ms"] <= P99_AT_1000_MS, at["p99_ms"] / P99_AT_1000_MS)
                     if at else "not measured"})
    else:
        rows.append({"target": "latency targets", "measured": "no latency result", "verdict": "not measured"})
    full = next((r for r in (predictor or {}).get("results", []) if r["batch"] == 256 and r["length"] == 50), None)
    rows.append({"target": f"predictor >= {PREDICTOR_WINDOWS_PER_S:,.0f} windows/s at batch 256, N=50",
                 "measured": f"{full['windows_per_s']:,.0f} windows/s" if full else "no predictor result at 256 x 50",
                 "verdict": _verdict(full["windows_per_s"] >= PREDICTOR_WINDOWS_PER_S,
                                     PREDICTOR_WINDOWS_PER_S / full["windows_per_s"]) if full else "not measured"})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks targets", description=__doc__)
    parser.parse_args(argv)
    rows = targets(RESULTS)
    print(table([[r["target"], r["measured"], r["verdict"]] for r in rows], ["target", "measured", "verdict"]))
    measured_at = {name: (_load(RESULTS, name) or {}).get("machine", {}).get("measured_at", "-")
                   for name in ("throughput", "latency", "predictor")}
    print("results measured at: " + ", ".join(f"{name} {when}" for name, when in measured_at.items()))
    write_results("targets", {"targets": rows, "measured_at": measured_at})
