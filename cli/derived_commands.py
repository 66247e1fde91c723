"""The commands that read what the worker derives from its predictions: ``demand`` and ``audience``."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import click

from cli.options import broker_option, config_option, env_option, settings_from
from core.derived_records import AudienceEntry, CategoryDemand
from core.settings import Settings

WindowKey = tuple[int, int]  # (window size s, window start ms)


@dataclasses.dataclass
class WindowTotal:
    """One category's demand in one window, summed over the source partitions reported so far."""

    expected_visits: float = 0.0
    distinct_users: int = 0
    expected_purchases: float = 0.0
    partitions: int = 0  # partitions reported
    of: int = 0  # partitions there are
    complete: bool = True  # every reported partition saw the whole window


class DemandBoard:
    """Closed demand records, one per (window, category, partition), summed per (window, category).

    A partition's record for a window can arrive twice: a worker that restarted before committing re-reads
    clicks and publishes the window again, as incomplete. A complete record wins over an incomplete one;
    otherwise the newer one replaces the older.
    """

    def __init__(self) -> None:
        self.records: dict[tuple[int, int, str, int], CategoryDemand] = {}

    def add(self, r: CategoryDemand) -> None:
        key = (r.window_size_s, r.window_start_ms, r.category_id, r.partition)
        old = self.records.get(key)
        if old is None or r.complete or not old.complete:
            self.records[key] = r

    def totals(self, size_s: int | None = None) -> dict[WindowKey, dict[str, WindowTotal]]:
        out: dict[WindowKey, dict[str, WindowTotal]] = {}
        for (size, start, category, _), r in self.records.items():
            if size_s is not None and size != size_s:
                continue
            t = out.setdefault((size, start), {}).setdefault(category, WindowTotal())
            t.expected_visits += r.expected_visits
            t.distinct_users += r.distinct_users  # users do not span partitions: the sum is exact
            t.expected_purchases += r.expected_purchases
            t.partitions += 1
            t.of = r.partitions
            t.complete = t.complete and r.complete
        return out

    def partitions_reported(self, window: WindowKey) -> tuple[int, int]:
        """(partitions that reported the window, partitions there are)."""
        seen = {p for (size, start, _, p) in self.records if (size, start) == window}
        total = max((r.partitions for k, r in self.records.items() if k[:2] == window), default=0)
        return len(seen), total


def render_demand(board: DemandBoard, size_s: int, top: int, received: int) -> str:
    """The newest window of ``size_s`` that every partition reported (else the newest one), top categories."""
    totals = board.totals(size_s)
    if not totals:
        return f"{received} demand records; no {size_s} s window closed yet"
    windows = sorted(totals, reverse=True)
    full = [w for w in windows if board.partitions_reported(w)[0] == board.partitions_reported(w)[1]]
    window = full[0] if full else windows[0]
    reported, of = board.partitions_reported(window)
    rows = sorted(totals[window].items(), key=lambda kv: -kv[1].expected_visits)[:top]
    complete = all(t.complete for t in totals[window].values())
    start = datetime.fromtimestamp(window[1] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{received} demand records; window of {size_s} s from {start} UTC (event time), "
             f"{reported} of {of} partitions{'' if complete else ', INCOMPLETE (a worker started mid-window)'}",
             f"{'category':>16} {'expected visits':>16} {'users':>8} {'expected purchases':>19}"]
    lines += [f"{category[:16]:>16} {t.expected_visits:16.2f} {t.distinct_users:8d} {t.expected_purchases:19.3f}"
              for category, t in rows]
    return "\n".join(lines)


def _follow(s: Settings, topic: str, decode: Callable[[bytes], Any], from_beginning: bool,
            timeout_s: float | None, on_record: Callable[[Any], bool], on_idle: Callable[[], None]) -> int:
    """Poll ``topic``, decode each record, hand it to ``on_record`` (True: stop); ``on_idle`` after each
    poll. Stops after ``timeout_s`` without records. Returns the count of undecodable records."""
    from core.errors import DecodeError
    from core.kafka import consumer_at

    consumer = consumer_at(s, topic, from_beginning=from_beginning)
    undecodable = 0
    last = time.monotonic()
    try:
        while True:
            batches = consumer.poll(timeout_ms=200)
            now = time.monotonic()
            if not batches and timeout_s is not None and now - last > timeout_s:
                return undecodable
            for records in batches.values():
                for record in records:
                    last = now
                    try:
                        value = decode(record.value)
                    except DecodeError as exc:
                        undecodable += 1
                        click.echo(f"skipped offset {record.partition}:{record.offset}: {exc}", err=True)
                        continue
                    if on_record(value):
                        return undecodable
            on_idle()
    finally:
        consumer.close()


def _codec(s: Settings, record_type: type) -> Any:
    from schemas.codec import RecordCodec

    return RecordCodec(record_type, **s.codec_options())


from_beginning_option = env_option("--from-beginning", env="CLICKSTREAM_FROM_BEGINNING", is_flag=True,
                                   help="Start at the oldest record instead of only new ones.")
timeout_option = env_option("--timeout-s", env="CLICKSTREAM_TIMEOUT_S", type=float,
                            help="Stop when no record arrived for this many seconds (default: wait forever).")


@click.command()
@config_option
@broker_option
@env_option("--topic", env="CLICKSTREAM_DEMAND_TOPIC", help="Topic to read (default: category-demand).")
@env_option("--size", "size_s", env="CLICKSTREAM_DEMAND_SIZE", type=int, default=60, show_default=True,
            help="Window size to show, in seconds (one of the worker's CLICKSTREAM_DEMAND_WINDOWS_S).")
@env_option("--top", env="CLICKSTREAM_DEMAND_TOP", type=int, default=15, show_default=True,
            help="Categories to show, by expected visits.")
@from_beginning_option
@timeout_option
def demand(config_file: str | None, broker: str | None, topic: str | None, size_s: int, top: int,
           from_beginning: bool, timeout_s: float | None) -> None:
    """Live table of predicted category demand in the newest closed event-time window.

    The worker publishes one record per (window, category, source partition) when a window closes (its end
    plus a grace period passed in event time); this command adds the partitions up per window and
    category: expected visits (sum of predicted category scores), distinct users, expected purchases
    (purchase probability x score). It shows the newest window that every partition reported, and says so
    when a worker (re)started during the window (its records are marked incomplete).
    """
    s = settings_from(config_file, broker=broker, demand_topic=topic)
    board = DemandBoard()
    state = {"received": 0, "drawn": 0}

    def draw() -> None:
        if state["received"] != state["drawn"]:
            state["drawn"] = state["received"]
            if sys.stdout.isatty():
                click.echo("\x1b[H\x1b[2J", nl=False)
            click.echo(render_demand(board, size_s, top, state["received"]))

    def take(record: CategoryDemand) -> bool:
        board.add(record)
        state["received"] += 1
        return False

    undecodable = _follow(s, s.demand_topic, _codec(s, CategoryDemand).decode, from_beginning, timeout_s,
                          take, draw)
    draw()
    if undecodable:
        click.echo(f"{undecodable} messages could not be decoded", err=True)


@click.command()
@config_option
@broker_option
@env_option("--topic", env="CLICKSTREAM_AUDIENCES_TOPIC", help="Topic to read (default: audiences).")
@env_option("--user", "users", env="CLICKSTREAM_USER", multiple=True, help="Only this user's entries (repeatable).")
@env_option("--max", "max_messages", env="CLICKSTREAM_MAX", type=int, help="Stop after this many entries.")
@from_beginning_option
@timeout_option
def audience(config_file: str | None, broker: str | None, topic: str | None, users: tuple[str, ...],
             max_messages: int | None, from_beginning: bool, timeout_s: float | None) -> None:
    """Print audience entries as JSON lines: users whose purchase probability crossed the threshold, with
    the probability, their top categories and the click that triggered it (at most once per session)."""
    s = settings_from(config_file, broker=broker, audiences_topic=topic)
    wanted = set(users)
    seen = {"n": 0}

    def take(entry: AudienceEntry) -> bool:
        if wanted and entry.user_id not in wanted:
            return False
        seen["n"] += 1
        click.echo(json.dumps(entry.to_json(), separators=(",", ":")))
        return max_messages is not None and seen["n"] >= max_messages

    undecodable = _follow(s, s.audiences_topic, _codec(s, AudienceEntry).decode, from_beginning, timeout_s,
                          take, lambda: None)
    if undecodable:
        click.echo(f"{undecodable} messages could not be decoded", err=True)


def demand_totals(records: Iterable[CategoryDemand], size_s: int | None = None) -> dict[WindowKey, dict[str, WindowTotal]]:
    """Sum records the way ``clickstream demand`` does (for scripts and tests)."""
    board = DemandBoard()
    for r in records:
        board.add(r)
    return board.totals(size_s)
