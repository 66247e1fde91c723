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
    incomplete: int = 0  # reported partitions whose worker did not see the whole window

    @property
    def complete(self) -> bool:
        return self.incomplete == 0

    def add(self, r: CategoryDemand, sign: int = 1) -> None:
        self.expected_visits += sign * r.expected_visits
        self.distinct_users += sign * r.distinct_users  # users do not span partitions: the sum is exact
        self.expected_purchases += sign * r.expected_purchases
        self.partitions += sign
        self.incomplete += sign * (not r.complete)
        self.of = r.partitions


class DemandBoard:
    """Closed demand records, one per (window, category, partition), summed per (window, category) as they
    arrive.

    A partition's record for a window can arrive twice: a worker that restarted before committing re-reads
    clicks and publishes the window again, as incomplete. A complete record wins over an incomplete one;
    otherwise the newer one replaces the older.
    """

    def __init__(self) -> None:
        self.records: dict[tuple[int, int, str, int], CategoryDemand] = {}
        self.windows: dict[WindowKey, dict[str, WindowTotal]] = {}
        self.reported: dict[WindowKey, set[int]] = {}  # partitions that reported each window
        self.partition_counts: dict[WindowKey, int] = {}

    def add(self, r: CategoryDemand) -> None:
        key = (r.window_size_s, r.window_start_ms, r.category_id, r.partition)
        old = self.records.get(key)
        if old is not None and old.complete and not r.complete:
            return
        self.records[key] = r
        total = self.windows.setdefault(key[:2], {}).setdefault(r.category_id, WindowTotal())
        if old is not None:
            total.add(old, -1)
        total.add(r)
        self.reported.setdefault(key[:2], set()).add(r.partition)
        self.partition_counts[key[:2]] = r.partitions

    def totals(self, size_s: int | None = None) -> dict[WindowKey, dict[str, WindowTotal]]:
        return {w: cells for w, cells in self.windows.items() if size_s is None or w[0] == size_s}

    def partitions_reported(self, window: WindowKey) -> tuple[int, int]:
        """(partitions that reported the window, partitions there are)."""
        return len(self.reported.get(window, ())), self.partition_counts.get(window, 0)


def render_demand(board: DemandBoard, size_s: int, top: int, received: int) -> str:
    """The newest window of ``size_s`` that every partition reported (else the newest one), top categories."""
    totals = board.totals(size_s)
    if not totals:
        return f"{received} demand records; no {size_s} s window closed yet"
    windows = sorted(totals, reverse=True)
    window = next((w for w in windows if board.partitions_reported(w)[0] == board.partitions_reported(w)[1]),
                  windows[0])
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


def draw_chart(board: DemandBoard, size_s: int, top: int, path: str) -> None:
    """Expected visits per window (summed over partitions) of the categories with the most in total, and
    expected purchases of all categories, over event time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = board.totals(size_s)
    windows = _dense_range(sorted(totals), [sum(t.expected_visits for t in totals[w].values())
                                            for w in sorted(totals)])
    overall: dict[str, float] = {}
    for w in windows:
        for category, t in totals[w].items():
            overall[category] = overall.get(category, 0.0) + t.expected_visits
    leaders = sorted(overall, key=lambda c: -overall[c])[:top]
    times = [datetime.fromtimestamp(start / 1000, tz=timezone.utc) for _, start in windows]
    fig, (visits_ax, buy_ax) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[3, 1])
    for category in leaders:
        visits_ax.plot(times, [totals[w][category].expected_visits if category in totals[w] else 0.0
                               for w in windows], label=category, linewidth=1.2)
    for w, when in zip(windows, times):
        if any(not t.complete for t in totals[w].values()):
            for ax in (visits_ax, buy_ax):  # a worker (re)started within it
                ax.axvspan(when, datetime.fromtimestamp((w[1] + size_s * 1000) / 1000, tz=timezone.utc),
                           color="0.85", linewidth=0)
    visits_ax.set_ylabel("expected visits")
    visits_ax.set_title(f"Predicted category demand per {size_s} s window (sum over partitions), "
                        f"top {len(leaders)} categories\n(grey: incomplete windows)", fontsize=11)
    visits_ax.legend(title="category", fontsize=8, ncols=2)
    visits_ax.grid(alpha=0.3)
    buy_ax.plot(times, [sum(t.expected_purchases for t in totals[w].values()) for w in windows], color="k",
                linewidth=1.2)
    buy_ax.set_ylabel("expected purchases\n(all categories)")
    buy_ax.set_xlabel("window start (event time, UTC)")
    buy_ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _dense_range(windows: list[WindowKey], weights: list[float], share: float = 0.9) -> list[WindowKey]:
    """The shortest run of consecutive windows holding ``share`` of the weight: replayed logs have a few
    stray clicks days away from the rest, which would squash a chart into a line."""
    total = sum(weights)
    if not windows or total <= 0:
        return windows
    best, lo, acc = (0, len(windows)), 0, 0.0
    for hi, weight in enumerate(weights):
        acc += weight
        while acc - weights[lo] >= share * total:
            acc -= weights[lo]
            lo += 1
        if acc >= share * total and hi + 1 - lo < best[1] - best[0]:
            best = (lo, hi + 1)
    return windows[best[0]: best[1]]


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
@env_option("--chart", type=click.Path(dir_okay=False), env="CLICKSTREAM_DEMAND_CHART",
            help="On exit, chart the top categories' expected visits per window into this PNG.")
def demand(config_file: str | None, broker: str | None, topic: str | None, size_s: int, top: int,
           from_beginning: bool, timeout_s: float | None, chart: str | None) -> None:
    """Live table of predicted category demand in the newest closed event-time window.

    The worker publishes one record per (window, category, source partition) when a window closes (its end
    plus a grace period passed in event time); this command adds the partitions up per window and
    category: expected visits (sum of predicted category scores), distinct users, expected purchases
    (purchase probability x score). It shows the newest window that every partition reported, and says so
    when a worker (re)started during the window (its records are marked incomplete).
    """
    s = settings_from(config_file, broker=broker, demand_topic=topic)
    board = DemandBoard()
    state = {"received": 0, "drawn": 0, "drawn_at": 0.0}

    def draw(force: bool = False) -> None:
        if state["received"] != state["drawn"] and (force or time.monotonic() - state["drawn_at"] > 0.5):
            state["drawn"], state["drawn_at"] = state["received"], time.monotonic()
            if sys.stdout.isatty():
                click.echo("\x1b[H\x1b[2J", nl=False)
            click.echo(render_demand(board, size_s, top, state["received"]))

    def take(record: CategoryDemand) -> bool:
        board.add(record)
        state["received"] += 1
        return False

    try:
        undecodable = _follow(s, s.demand_topic, _codec(s, CategoryDemand).decode, from_beginning, timeout_s,
                              take, draw)
    finally:
        if chart:
            draw_chart(board, size_s, top, chart)
            click.echo(f"chart: {chart}", err=True)
    draw(force=True)
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
    wanted = {s.user_ids().key_of(user) for user in users}  # pseudonyms, with pseudonymous ids
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
