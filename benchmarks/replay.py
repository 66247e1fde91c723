"""Events/s that `clickstream replay --speed max` pushes into Kafka from a 1M-row log (synthetic, Taobao format)."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks.common import write_results
from core.synthetic import write_taobao_csv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks replay", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    log = Path(".state/bench") / f"replay-{args.rows}.csv"
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        write_taobao_csv(str(log), users=50_000, events=args.rows, seed=2)
        print(f"wrote {log} ({args.rows:,} rows) in {time.perf_counter() - start:.1f}s")
    topic = f"bench-replay-{uuid.uuid4().hex[:8]}"
    clickstream = str(Path(sys.executable).parent / "clickstream")
    start = time.perf_counter()
    out = subprocess.run([clickstream, "replay", str(log), "--topic", topic, "--speed", "max", "-q"],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    match = re.search(r"replay: (\d+) clicks to \S+ in ([\d.]+)s", out.stderr)
    assert match, out.stderr
    sent, seconds = int(match.group(1)), float(match.group(2))
    print(out.stderr.strip())
    print(f"replay: {sent / seconds:,.0f} events/s while sending; {sent / wall:,.0f} events/s for the whole "
          f"command (start-up and line count included)")
    write_results("replay", {"rows": args.rows, "sent": sent, "send_seconds": seconds, "events_per_s": sent / seconds,
                             "command_seconds": wall, "events_per_s_whole_command": sent / wall})
