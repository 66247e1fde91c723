"""`python -m benchmarks targets` reads the other benchmarks' results and says which targets are met."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.targets import targets


def write(folder: Path, name: str, data: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_each_target_is_met_or_missed_by_its_factor(tmp_path: Path) -> None:
    write(tmp_path, "throughput", {"worker": {"rate": 1500.0}, "ceilings": {"faust_passthrough": 3000.0},
                                   "ratios": {"faust_passthrough": 0.5}})
    write(tmp_path, "latency", {"results": [{"rate": 250, "p99_ms": 60.0}, {"rate": 500, "p99_ms": 99.0},
                                            {"rate": 1000, "p99_ms": 40.0}, {"rate": 1250, "p99_ms": 400.0}]})
    write(tmp_path, "predictor", {"results": [{"batch": 256, "length": 8, "windows_per_s": 30_000.0},
                                              {"batch": 256, "length": 50, "windows_per_s": 25_000.0}]})
    verdicts = [row["verdict"] for row in targets(tmp_path)]
    # 50 % of 80 %; the highest rate within 100 ms is 1,000 of 2,500; p99 40 ms at 1,000; 25k of 20k windows/s
    assert verdicts == ["missed by 1.6x", "missed by 2.5x", "met", "met"]


def test_missing_results_are_said_to_be_missing(tmp_path: Path) -> None:
    write(tmp_path, "throughput", {"worker": {"rate": 1500.0}})  # measured with --skip-ceilings
    rows = targets(tmp_path)
    assert [row["verdict"] for row in rows] == ["not measured"] * 3
    assert "--skip-ceilings" in rows[0]["measured"]
