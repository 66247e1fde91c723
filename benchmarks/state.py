"""Worker memory and state size: the throughput run on 100k synthetic users (peak RSS, RocksDB bytes per user)."""
from __future__ import annotations

from benchmarks import throughput


def main(argv: list[str] | None = None) -> None:
    defaults = ["--synthetic", "--users", "100000", "--clicks", "300000", "--skip-ceilings"]
    throughput.main([*defaults, *(argv or [])], name="state")
