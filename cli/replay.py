"""Backfill: historical logs replayed to the clicks topic in event-time order, paced, resumable.

Logs are read as streams (constant memory): a bounded reorder buffer puts events in event-time order, so a
log that is sorted, or nearly so (out of order by fewer than ``reorder_buffer`` rows), replays in order;
events later than that are sent when met and counted as ``late``. Several logs are merged by event time.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError, InputError
from core.records import Click

REORDER_BUFFER = 20_000


@dataclass
class ReplayCounters:
    late: int = 0


def in_event_time_order(clicks: Iterable[Click], counters: ReplayCounters,
                        reorder_buffer: int = REORDER_BUFFER) -> Iterator[Click]:
    """Yield clicks by event time (ties in input order) through a bounded heap."""
    heap: list[tuple[int, int, Click]] = []
    newest_sent = None
    for seq, click in enumerate(clicks):
        heapq.heappush(heap, (click.event_time_ms, seq, click))
        if len(heap) > reorder_buffer:
            t, _, out = heapq.heappop(heap)
            if newest_sent is not None and t < newest_sent:
                counters.late += 1
            newest_sent = t if newest_sent is None else max(newest_sent, t)
            yield out
    while heap:
        t, _, out = heapq.heappop(heap)
        if newest_sent is not None and t < newest_sent:
            counters.late += 1
        newest_sent = t if newest_sent is None else max(newest_sent, t)
        yield out


def merge_by_time(streams: list[Iterator[Click]]) -> Iterator[Click]:
    return heapq.merge(*streams, key=lambda c: c.event_time_ms)


def parse_speed(text: str) -> float | None:
    """'max' -> None (no pacing); '1x', '60x', '0.5x' -> that multiple of real time."""
    value = text.strip().lower()
    if value == "max":
        return None
    try:
        speed = float(value.removesuffix("x"))
    except ValueError:
        raise ConfigError(f"--speed must be like 1x, 60x or max, got {text!r}") from None
    if speed <= 0:
        raise ConfigError(f"--speed must be positive, got {text!r}")
    return speed


def pacing(speed: float | None, max_idle_s: float = 10.0) -> Any:
    """due_s for send_all: event-time distance from the first event, divided by the speed.

    Idle stretches longer than ``max_idle_s`` of wall time (a log's stray old event, a night without
    traffic) are cut to ``max_idle_s``, so a replay never sits silent for hours.
    """
    if speed is None:
        return None
    state = {"last_ts": None, "due": 0.0}

    def due_s(_: int, ts_ms: int | None) -> float:
        if ts_ms is None:
            return state["due"]
        if state["last_ts"] is not None:
            step = max(0.0, (ts_ms - state["last_ts"]) / 1000.0 / speed)
            state["due"] += min(step, max_idle_s)
        state["last_ts"] = ts_ms
        return state["due"]

    return due_s


class Checkpoint:
    """How many events of a replay are delivered, kept in a small JSON file (written atomically)."""

    def __init__(self, path: str | os.PathLike[str] | None, logs: list[str]) -> None:
        self.path = Path(path) if path else None
        self.logs = logs

    def load(self) -> int:
        if self.path is None or not self.path.exists():
            return 0
        try:
            data = json.loads(self.path.read_text())
        except ValueError:
            raise InputError(f"checkpoint {self.path} is corrupt; delete it to start over") from None
        if data.get("logs") != self.logs:
            raise InputError(f"checkpoint {self.path} belongs to a replay of {data.get('logs')}, not {self.logs}")
        return int(data["delivered"])

    def save(self, delivered: int) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"logs": self.logs, "delivered": delivered}))
        os.replace(tmp, self.path)


def skip(clicks: Iterator[Click], n: int) -> Iterator[Click]:
    return itertools.islice(clicks, n, None)


def count_lines(path: str | os.PathLike[str]) -> int:
    """Rows of a log (gzip too), for the progress bar's ETA."""
    from core.logs import open_text

    with open_text(path) as f:
        return sum(chunk.count("\n") for chunk in iter(lambda: f.read(1 << 20), ""))
