"""python -m benchmarks NAME [options]: predictor, throughput, latency, state, replay, training, restart, derived,
scaleout, churn, rollout, targets (or all)."""
from __future__ import annotations

import importlib
import sys

NAMES = ("predictor", "replay", "training", "throughput", "latency", "state", "restart", "derived", "scaleout", "churn",
         "rollout", "targets")  # targets reads the results of the others: last


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        print("each takes --help for its own options")
        return
    name, argv = sys.argv[1], sys.argv[2:]
    for each in NAMES if name == "all" else (name,):
        if each not in NAMES:
            raise SystemExit(f"unknown benchmark {each!r}; choose from {', '.join(NAMES)} or all")
        print(f"== {each}")
        importlib.import_module(f"benchmarks.{each}").main(argv if name != "all" else [])


if __name__ == "__main__":
    main()
