"""Shared by the benchmarks: results files, charts, the model to measure, machine facts."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("CLICKSTREAM_RESULTS_DIR", "results"))


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants (a worker's inference process, for one)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo += children.get(current, [])
    return tree


def tree_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each of ``pids`` that still runs."""
    seconds = {}
    for p in pids:
        try:
            seconds[p] = cpu_seconds(p)
        except OSError:
            pass
    return seconds


def tree_cpu_used(before: dict[int, float]) -> float:
    """CPU seconds the processes of ``before`` (:func:`tree_cpu_seconds`) used since, over those still running."""
    after = tree_cpu_seconds(list(before))
    return sum(after[p] - before[p] for p in after)


def status_mb(pid: int, field: str) -> float:
    """A memory field of ``/proc/<pid>/status`` (``VmHWM``: peak RSS, ``VmRSS``: RSS now) in MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def peak_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


def local_broker_pid() -> int | None:
    """The pid of the Kafka broker running on this machine (``make kafka-up``), None when there is none."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kafka.Kafka" in command:
                return int(entry.name)
    return None


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=1))
    print(f"results: {path}")
    return path


def bar_chart(path: Path, title: str, labels: list[str], values: list[float], ylabel: str,
              log: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 4))
    bars = ax.bar(labels, values, color=[f"C{i % 10}" for i in range(len(labels))])
    ax.bar_label(bars, [f"{v:,.0f}" if v >= 10 else f"{v:.2f}" for v in values], fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}")


def model_dir(explicit: str | None) -> Path:
    """The artifact to measure: the given one, else artifacts/model (``make demo`` or ``clickstream train``)."""
    path = Path(explicit or os.environ.get("CLICKSTREAM_MODEL_DIR", "artifacts/model"))
    if not (path / "manifest.json").exists():
        raise SystemExit(f"no model artifact at {path}: train one first (clickstream train LOG --out {path})")
    return path


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def run_settings(prefix: str) -> Any:
    """The user's settings with topics and app id of this run alone (``<prefix>-<topic>-<run>``)."""
    import dataclasses
    import uuid

    from core.settings import load_settings

    run = uuid.uuid4().hex[:8]
    return dataclasses.replace(load_settings(), clicks_topic=f"{prefix}-clicks-{run}",
                               predictions_topic=f"{prefix}-out-{run}", dead_letter_topic=f"{prefix}-dead-{run}",
                               demand_topic=f"{prefix}-demand-{run}", audiences_topic=f"{prefix}-audiences-{run}",
                               app_id=f"{prefix}-{run}")
