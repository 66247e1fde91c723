"""Training from a topic against training from a file: the same synthetic log (1M clicks by default, Taobao
format) written to a file and replayed into a fresh topic, then, each in its own process, reading and cleaning
it (peak RSS per million clicks and seconds) and `clickstream train` for one epoch (peak RSS, seconds)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks.common import peak_rss_mb, table, write_results
from core.synthetic import write_taobao_csv

READ = """
import json, resource, sys, time
sys.path.insert(0, ".")
start = time.perf_counter()
if sys.argv[1] == "file":
    from model.data import load_events
    log, _ = load_events([sys.argv[2]], "taobao")
else:
    from cli.topic_clicks import clicks_from_topic
    from core.logs import ReadReport
    from core.settings import load_settings
    from model.data import clean_events
    log = clean_events(clicks_from_topic(load_settings(None), sys.argv[2], ReadReport("topic"), progress=False))
print(json.dumps({"events": len(log), "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_tracked(command: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB read from /proc while it ran, stdout) of a command."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while process.poll() is None:
        try:
            peak = max(peak, peak_rss_mb(process.pid))
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{err[-2000:]}")
    return time.perf_counter() - start, peak, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks training", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-train", action="store_true", help="measure reading and cleaning only")
    args = parser.parse_args(argv)
    log = Path(".state/bench") / f"replay-{args.rows}.csv"
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        write_taobao_csv(str(log), users=50_000, events=args.rows, seed=2)
    bin_dir = Path(sys.executable).parent
    topic = f"bench-training-{uuid.uuid4().hex[:8]}"
    subprocess.run([str(bin_dir / "clickstream"), "replay", str(log), "--topic", topic, "--speed", "max", "-q"],
                   check=True, capture_output=True)
    rows, results = [], {}
    for source, target in (("file", str(log)), ("topic", topic)):
        _, _, out = run_tracked([sys.executable, "-c", READ, source, target])
        read = json.loads(out)
        per_million = read["peak_rss_mb"] / (args.rows / 1e6)
        results[source] = {"read": read, "read_peak_rss_mb_per_million": per_million}
        row = [source, read["events"], read["seconds"], read["peak_rss_mb"], per_million]
        if not args.skip_train:
            given = [str(log), "--format", "taobao"] if source == "file" else ["--from-topic", topic]
            out_dir = Path(".state/bench") / f"training-{source}"
            seconds, peak, _ = run_tracked([str(bin_dir / "clickstream"), "train", *given, "--epochs", "1",
                                            "--out", str(out_dir)])
            results[source]["train"] = {"seconds": seconds, "peak_rss_mb": peak}
            row += [seconds, peak]
        rows.append(row)
    header = ["source", "events kept", "read + clean s", "read peak RSS MB", "MB per 1M clicks"]
    print(table(rows, header + ([] if args.skip_train else ["train (1 epoch) s", "train peak RSS MB"])))
    write_results("training", {"rows": args.rows, "topic": topic, "results": results})
