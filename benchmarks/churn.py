"""Churn: workers of one app killed with kill -9 and started again while clicks arrive at a steady rate.

Two or three workers share fresh topics (4 partitions), each with its own state folder, as on separate machines.
Clicks are produced at ``--rate`` for ``--minutes``; every ``--kill-every-s`` one worker (in turn) is killed with
kill -9 and started again at once, and a worker that exits by itself (the progress watchdog's exit 75, a crash)
is started again as a supervisor would. Then the churn stops and the workers drain what is left.

Reported: clicks sent, predicted, lost (never predicted) and duplicated (predicted more than once: at least
once, a restart reads again what was not committed); the workers' exits by code (75: a stall); holes (records
the consumer skipped, read from the log); the longest time a partition's committed offset stood still while
clicks waited; recovery after each kill (until every partition has a prediction of a click sent after the
kill; p50 / max); and whether the windows in the changelog equal those of an uninterrupted run. A timeline of
predictions per second with the kills marked is written beside the results.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, model_dir, run_settings, table, write_results
from benchmarks.worker_process import WorkerProcess, worker_env
from core.kafka import consumer_at, ensure_topics, read_to_end, send_all
from core.records import Click, Prediction
from core.settings import Settings
from schemas.codec import RecordCodec
from streams.watchdog import ProgressWatch
from streams.window import UserWindow

STATE = Path(".state/bench")
CLICK, PREDICTION = RecordCodec(Click), RecordCodec(Prediction)
HOLE = re.compile(r"never reached the agent \(the next one did\); (\d+) records read")
# few predictor shapes: a restarted worker serves within seconds
CHURN_SHAPES = {"predictor_batch_sizes": (64, 512), "predictor_lengths": (16,), "inference_threads": 1}


@dataclasses.dataclass
class Outcome:
    sent: int
    predicted: int
    lost: int
    duplicated: int
    exits: dict[int, int]  # exit code -> count, kills not included
    kills: int
    holes: int
    longest_uncommitted_s: float
    recovery_s: list[float]
    windows_equal: bool
    windows_differing: int
    timeline: list[tuple[float, int]]  # (seconds since the first click, predictions in that second)
    kill_times: list[float]

    def summary(self) -> dict[str, Any]:
        r = self.recovery_s
        return {"sent": self.sent, "predicted": self.predicted, "lost": self.lost, "duplicated": self.duplicated,
                "stalls": self.exits.get(75, 0), "exits": self.exits, "kills": self.kills, "holes": self.holes,
                "longest_uncommitted_s": round(self.longest_uncommitted_s, 1),
                "recovery_p50_s": round(statistics.median(r), 1) if r else None,
                "recovery_max_s": round(max(r), 1) if r else None,
                "windows_equal": self.windows_equal, "windows_differing": self.windows_differing}


class Supervised:
    """One worker slot: its state folder kept across restarts, a new log per start."""

    def __init__(self, name: str, settings: Settings, model: Path, root: Path) -> None:
        self.name, self.settings, self.model, self.root = name, settings, model, root
        self.starts = 0
        self.current: WorkerProcess | None = None
        self.logs: list[WorkerProcess] = []
        self.starting: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker in the background (it warms its model for a few seconds)."""
        self.starts += 1
        worker = WorkerProcess(worker_env(self.settings, self.model, self.root / self.name / "state"),
                               self.root / f"{self.name}-{self.starts}.log")
        self.current = worker
        self.logs.append(worker)

        def run() -> None:
            try:
                worker.start()
            except RuntimeError:
                pass  # exited while starting: the supervisor sees the exit and starts it again

        self.starting = threading.Thread(target=run, daemon=True)
        self.starting.start()

    def exited(self) -> int | None:
        """The exit code of a worker that ended by itself (None: running or starting)."""
        p = self.current.process if self.current else None
        if p is None or (self.starting is not None and self.starting.is_alive() and p.poll() is None):
            return None
        return p.poll()

    def kill(self) -> None:
        if self.current is not None:
            if self.starting is not None:
                self.starting.join()
            self.current.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.current is not None:
            if self.starting is not None:
                self.starting.join()
            self.current.stop(signal.SIGTERM)


class Predictions(threading.Thread):
    """Reads the predictions topic from its beginning: per event id, the times its predictions arrived."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.arrivals: dict[str, list[float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        consumer = consumer_at(self.settings, self.settings.predictions_topic, from_beginning=True)
        try:
            while not self.done.is_set():
                for batch in consumer.poll(timeout_ms=200).values():
                    now = time.monotonic()
                    for record in batch:
                        self.arrivals.setdefault(PREDICTION.decode(record.value).event_id, []).append(now)
        finally:
            consumer.close()


class Commits(threading.Thread):
    """Polls the group's committed offsets and the clicks topic's end offsets each second: the longest time a
    partition's committed offset stood still while clicks waited behind it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.longest_s = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        s = self.settings
        admin = KafkaAdminClient(**s.kafka_python_config())
        consumer = KafkaConsumer(**s.kafka_python_config())
        tps = [TopicPartition(s.clicks_topic, p) for p in range(s.partitions)]
        watch = ProgressWatch(timeout_s=0)  # the worker's own measure of a partition's wait, never a stall here
        try:
            while not self.done.wait(1.0):
                try:
                    ends = consumer.end_offsets(tps)
                    committed = admin.list_group_offsets(s.app_id).get(s.app_id, {})
                except Exception:  # the group is rebalancing or the broker is busy: next second
                    continue
                watch.stalled({tp: ends[tp] for tp in tps},
                              {tp: committed[tp].offset if tp in committed else None for tp in tps})
                self.longest_s = max(self.longest_s, *watch.waiting_s.values())
        finally:
            consumer.close()
            admin.close()


def partition_of(key: bytes, partitions: int) -> int:
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def expected_windows(clicks: Iterable[Click], max_events: int) -> dict[str, UserWindow]:
    """Windows of an uninterrupted run: every click once, in production order per user."""
    windows: dict[str, UserWindow] = {}
    for c in clicks:
        windows.setdefault(c.user_id, UserWindow.empty()).add(
            c.event_id, c.category_id, c.event_type, c.event_time_ms, max_events)
    return windows


def changelog_windows(settings: Settings, timeout_s: float = 120.0) -> dict[str, UserWindow]:
    """The newest value per user in the window table's changelog (what any worker recovers from); a user whose
    newest record is a tombstone has no window."""
    latest = {record.key.decode(): record.value for record in read_to_end(settings, settings.changelog_topic, timeout_s)}
    return {user: UserWindow.unpack(value) for user, value in latest.items() if value is not None}


def window_tuple(w: UserWindow) -> tuple[list[int], list[int], list[int], list[str]]:
    return w.times_ms, w.event_types, w.checksums, w.categories


def churn(settings: Settings, model: Path, clicks: list[Click], *, workers: int, rate: float, duration_s: float,
          kill_every_s: float, root: Path, drain_timeout_s: float = 240.0, log: Any = print) -> Outcome:
    """Run the churn and measure it (see the module's docstring). ``settings`` name fresh topics and app id."""
    import json

    s = dataclasses.replace(settings, **CHURN_SHAPES, window_ttl_s=10 * 365 * 86_400, model_poll_s=0)
    window_length = json.loads((model / "manifest.json").read_text())["network"]["window_length"]
    ensure_topics(s, [s.clicks_topic, s.predictions_topic])
    count = min(len(clicks), int(rate * duration_s))
    clicks = clicks[:count]
    slots = [Supervised(f"w{i}", s, model, root) for i in range(workers)]
    predictions, commits = Predictions(s), Commits(s)
    exits: Counter = Counter()
    kill_times: list[float] = []
    try:
        for slot in slots:
            slot.start()
        for slot in slots:
            assert slot.starting is not None
            slot.starting.join()
        predictions.start()
        commits.start()
        started = time.monotonic()
        messages = [(c.key, CLICK.encode(c), c.event_time_ms) for c in clicks]
        producer = threading.Thread(target=send_all, args=(s, s.clicks_topic, messages),
                                    kwargs={"due_s": lambda i, _ts: i / rate}, daemon=True)
        producer.start()
        turn = itertools.cycle(slots)
        next_kill = started + kill_every_s
        while time.monotonic() < started + duration_s:
            for slot in slots:
                code = slot.exited()
                if code is not None:  # ended by itself: the supervisor starts it again
                    exits[code] += 1
                    log(f"{time.monotonic() - started:6.1f}s {slot.name} exited with {code}; starting it again")
                    slot.start()
            if time.monotonic() >= next_kill:
                slot = next(turn)
                kill_times.append(time.monotonic())
                slot.kill()
                log(f"{time.monotonic() - started:6.1f}s kill -9 {slot.name}; starting it again")
                slot.start()
                next_kill += kill_every_s
            time.sleep(0.2)
        producer.join()
        log(f"{time.monotonic() - started:6.1f}s churn over: {count:,} clicks sent; draining")
        wanted = {c.event_id for c in clicks}
        deadline = time.monotonic() + drain_timeout_s
        while not wanted <= predictions.arrivals.keys() and time.monotonic() < deadline:
            for slot in slots:
                code = slot.exited()
                if code is not None:
                    exits[code] += 1
                    slot.start()
            time.sleep(1)
        time.sleep(3)  # the last commits and changelog writes
    finally:
        predictions.done.set()
        commits.done.set()
        for slot in slots:
            slot.stop()
    arrivals = predictions.arrivals
    predicted = wanted & arrivals.keys()
    sent_at = [started + i / rate for i in range(count)]
    partitions = [partition_of(c.key, s.partitions) for c in clicks]
    recovery = []
    for killed in kill_times:
        firsts = {}
        for i, c in enumerate(clicks):
            if sent_at[i] >= killed and c.event_id in arrivals:
                p = partitions[i]
                firsts[p] = min(firsts.get(p, float("inf")), min(arrivals[c.event_id]))
        if len(firsts) == s.partitions:
            recovery.append(max(firsts.values()) - killed)
    per_second = Counter(int(min(times) - started) for times in arrivals.values())
    timeline = [(float(t), per_second.get(t, 0)) for t in range(0, max(per_second, default=0) + 1)]
    holes = sum(int(n) for slot in slots for w in slot.logs for n in HOLE.findall(w.log()))
    expected = {u: window_tuple(w) for u, w in expected_windows(clicks, window_length).items()}
    recovered = {u: window_tuple(w) for u, w in changelog_windows(s).items()}
    differing = sum(1 for u in expected.keys() | recovered.keys() if expected.get(u) != recovered.get(u))
    return Outcome(sent=count, predicted=len(predicted), lost=count - len(predicted),
                   duplicated=sum(len(arrivals[e]) - 1 for e in predicted), exits=dict(exits), kills=len(kill_times),
                   holes=holes, longest_uncommitted_s=commits.longest_s, recovery_s=recovery,
                   windows_equal=differing == 0, windows_differing=differing, timeline=timeline,
                   kill_times=[k - started for k in kill_times])


def timeline_chart(path: Path, outcome: Outcome, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart")
        return
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([t for t, _ in outcome.timeline], [n for _, n in outcome.timeline], lw=1, label="first predictions/s")
    for i, k in enumerate(outcome.kill_times):
        ax.axvline(k, color="red", alpha=0.4, lw=1, label="kill -9" if i == 0 else None)
    ax.set_xlabel("seconds since the first click")
    ax.set_ylabel("predictions/s")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}")


def main(argv: list[str] | None = None, name: str = "churn") -> None:
    from benchmarks.throughput import load_clicks

    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {name}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="workers of the app (2)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long clicks arrive and workers die (10)")
    parser.add_argument("--rate", type=float, default=100.0, help="clicks per second (100)")
    parser.add_argument("--kill-every-s", type=float, default=20.0, help="seconds between two kills (20)")
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    args = parser.parse_args(argv)

    model = model_dir(args.model)
    s = dataclasses.replace(run_settings("churn"), partitions=4)
    duration = args.minutes * 60
    clicks = load_clicks(int(args.rate * duration), 20_000, False, s.app_id)
    outcome = churn(s, model, clicks, workers=args.workers, rate=args.rate, duration_s=duration,
                    kill_every_s=args.kill_every_s, root=STATE / s.app_id)
    summary = outcome.summary()
    rows = [[k, str(v)] for k, v in summary.items()]
    print(table(rows, ["", "value"]))
    write_results(name, {**vars(args), **summary, "recovery_s": [round(r, 1) for r in outcome.recovery_s],
                         "kill_times_s": [round(k, 1) for k in outcome.kill_times]})
    timeline_chart(RESULTS / f"{name}.png", outcome,
                   f"{args.workers} workers, {args.rate:.0f} clicks/s, kill -9 every {args.kill_every_s:.0f} s")
