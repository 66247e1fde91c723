"""The Kafka-facing commands: ``topics``, ``produce``, ``subscribe``, ``replay``."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from cli.options import (
    broker_option,
    config_option,
    env_option,
    iter_logs,
    log_send_options,
    send_options,
    settings_from,
)
from cli.replay import Checkpoint, skip
from core.errors import ClickstreamError
from core.logs import ReadReport
from core.records import Click, Prediction
from core.settings import Settings


@click.command()
@config_option
@broker_option
@env_option("--partitions", env="CLICKSTREAM_PARTITIONS", type=int,
            help="Partitions of each topic created (default 4).")
def topics(config_file: str | None, broker: str | None, partitions: int | None) -> None:
    """Create the clicks, predictions, dead-letter, category-demand, audiences and forget topics (existing ones are
    left alone). The predictions, dead-letter, audiences and forget topics keep records for CLICKSTREAM_RETENTION_DAYS
    (7 days by default)."""
    from core.kafka import ensure_topics

    s = settings_from(config_file, broker=broker, partitions=partitions)
    names = [s.clicks_topic, s.demand_topic, *s.aging_topics]
    created = ensure_topics(s, [s.clicks_topic, s.demand_topic]) + ensure_topics(s, s.aging_topics,
                                                                                 configs=s.retention_configs())
    for name in names:
        click.echo(f"{name}: {'created' if name in created else 'exists'}")


def _encoded(s: Settings, clicks: Iterable[Click]) -> Iterator[tuple[bytes, bytes, int]]:
    from schemas.codec import RecordCodec

    encode = RecordCodec(Click, s.schema_id_click, **s.codec_options()).encode
    for c in clicks:
        yield c.key, encode(c), c.event_time_ms


def _progress(items: Iterable[Any], total: int | None, desc: str, quiet: bool) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit=" clicks", unit_scale=True, disable=quiet or None,
                file=sys.stderr, mininterval=0.5)


def _send(s: Settings, topic: str, clicks: Iterable[Click], due_s: Any, total: int | None,
          quiet: bool, desc: str, checkpoint: Checkpoint | None = None, start_at: int = 0) -> None:
    """Send clicks, but those of forgotten users (core/privacy.py); with a checkpoint, record how many are
    delivered (a rerun resumes after them, or a little before when users were forgotten meanwhile)."""
    from core.kafka import ensure_topics, send_all
    from core.privacy import ForgottenFilter

    progress = {"delivered": 0, "saved_at": 0.0}

    def delivered(n: int) -> None:  # the file is written at most once a second, and once at the end
        progress["delivered"] = n
        if checkpoint is not None and time.monotonic() - progress["saved_at"] > 1.0:
            checkpoint.save(start_at + n)
            progress["saved_at"] = time.monotonic()

    ensure_topics(s, [topic])
    forgotten = ForgottenFilter.read(s)
    if forgotten.forgotten:
        clicks = (c for c in clicks if forgotten.keeps(c.user_id, c.event_time_ms))
    try:
        stats = send_all(s, topic, _progress(_encoded(s, clicks), total, desc, quiet), due_s=due_s,
                         on_delivered=delivered)
    finally:
        if checkpoint is not None:
            checkpoint.save(start_at + int(progress["delivered"]))
    click.echo(f"{desc}: {stats.sent} clicks to {topic} in {stats.elapsed_s:.2f}s ({stats.rate:,.0f}/s)", err=True)
    if forgotten.dropped:
        click.echo(f"{desc}: {forgotten.dropped} clicks of forgotten users left out ({s.forgotten_topic})", err=True)
    if stats.retried:
        click.echo(f"{desc}: {stats.retried} clicks were sent again after retriable errors", err=True)
    if stats.failed:
        resume = " (the checkpoint stops before the first; rerun to resume)" if checkpoint is not None else ""
        raise ClickstreamError(f"{stats.failed} clicks were not delivered, at positions {stats.describe_failures()} "
                               f"in send order{resume} (first error: {stats.first_error})")


def _report_reads(reports: list[ReadReport]) -> None:
    for r in reports:
        click.echo(r.summary(), err=True)


@click.command()
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False))
@log_send_options
@env_option("--synthetic", env="CLICKSTREAM_SYNTHETIC", is_flag=True,
            help="Generate shoppers instead of reading logs.")
@env_option("--users", env="CLICKSTREAM_USERS", type=int, default=1000, show_default=True,
            help="Synthetic shoppers.")
@env_option("--events", env="CLICKSTREAM_EVENTS", type=int, default=10_000, show_default=True,
            help="Synthetic clicks to send.")
@env_option("--seed", env="CLICKSTREAM_SEED", type=int, default=0, show_default=True,
            help="Seed of the synthetic generator.")
@env_option("--rate", env="CLICKSTREAM_RATE", type=float, default=0.0, show_default=True,
            help="Clicks per second; 0 sends as fast as the broker takes them.")
@send_options
def produce(logs: tuple[str, ...], fmt: str, mapping: str | None, strict: bool, id_prefix: str | None,
            synthetic: bool, users: int, events: int, seed: int, rate: float, checkpoint: str | None,
            topic: str | None, config_file: str | None, broker: str | None, quiet: bool) -> None:
    """Send clicks, keyed by user id, from LOGS (file order) or from the synthetic shopper generator."""
    if bool(logs) == synthetic:
        raise click.UsageError("give log files or --synthetic (not both)")
    if rate < 0:
        raise click.UsageError("--rate must be >= 0")
    s = settings_from(config_file, broker=broker, clicks_topic=topic)
    reports: list[ReadReport] = []
    if synthetic:
        from core.synthetic import synthetic_clicks

        clicks: Iterable[Click] = synthetic_clicks(users, events, seed=seed, id_prefix=id_prefix)
        total: int | None = events
    else:
        clicks, total = iter_logs(logs, fmt, mapping, strict, id_prefix, reports), None
    saved = Checkpoint(checkpoint, [str(Path(p).resolve()) for p in logs] or [f"synthetic:{users}:{events}:{seed}"])
    start_at = saved.load()
    due_s = (lambda i, _ts: i / rate) if rate > 0 else None
    try:
        _send(s, s.clicks_topic, skip(iter(clicks), start_at), due_s, total - start_at if total else None, quiet,
              "produce", saved, start_at)
    finally:
        _report_reads(reports)


@click.command()
@config_option
@broker_option
@env_option("--topic", env="CLICKSTREAM_PREDICTIONS_TOPIC", help="Topic to read (default: predictions).")
@env_option("--from-beginning", env="CLICKSTREAM_FROM_BEGINNING", is_flag=True,
            help="Start at the oldest prediction instead of only new ones.")
@env_option("--user", "users", env="CLICKSTREAM_USER", multiple=True,
            help="Only this user's predictions (repeatable).")
@env_option("--max", "max_messages", env="CLICKSTREAM_MAX", type=int,
            help="Stop after this many predictions.")
@env_option("--timeout-s", env="CLICKSTREAM_TIMEOUT_S", type=float,
            help="Stop when no prediction arrived for this many seconds (default: wait forever).")
@env_option("--table", env="CLICKSTREAM_TABLE", is_flag=True,
            help="Show a live table of the latest prediction per user instead of JSON lines.")
def subscribe(config_file: str | None, broker: str | None, topic: str | None, from_beginning: bool,
              users: tuple[str, ...], max_messages: int | None, timeout_s: float | None, table: bool) -> None:
    """Print predictions as JSON lines (one per prediction) or as a live table."""
    from core.errors import DecodeError
    from core.kafka import consumer_at
    from schemas.codec import RecordCodec

    s = settings_from(config_file, broker=broker, predictions_topic=topic)
    codec = RecordCodec(Prediction, s.schema_id_prediction, **s.codec_options())
    consumer = consumer_at(s, s.predictions_topic, from_beginning=from_beginning)
    wanted = {s.user_ids().key_of(user) for user in users}  # pseudonyms, with pseudonymous ids
    seen = undecodable = 0
    latest: dict[str, Prediction] = {}
    last_message = last_draw = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            batches = consumer.poll(timeout_ms=200)
            now = time.monotonic()
            if not batches and timeout_s is not None and now - last_message > timeout_s:
                break
            for records in batches.values():
                for record in records:
                    last_message = now
                    try:
                        p = codec.decode(record.value)
                    except DecodeError as exc:
                        undecodable += 1
                        click.echo(f"skipped offset {record.partition}:{record.offset}: {exc}", err=True)
                        continue
                    if wanted and p.user_id not in wanted:
                        continue
                    seen += 1
                    if table:
                        latest[p.user_id] = p
                    else:
                        click.echo(json.dumps(p.to_json(), separators=(",", ":")))
                    if max_messages is not None and seen >= max_messages:
                        break
                if max_messages is not None and seen >= max_messages:
                    break
            if table and (now - last_draw > 0.5 or (max_messages is not None and seen >= max_messages)):
                _draw_table(latest, seen)
                last_draw = now
    finally:
        consumer.close()
    if table:
        _draw_table(latest, seen)
    if undecodable:
        click.echo(f"{undecodable} messages could not be decoded", err=True)


def _draw_table(latest: dict[str, Prediction], seen: int, rows: int = 20) -> None:
    newest = sorted(latest.values(), key=lambda p: p.predicted_at_ms, reverse=True)[:rows]
    lines = [f"{seen} predictions, {len(latest)} users; newest {len(newest)}:",
             f"{'user':>14} {'next categories (score)':<44} {'next event':<18} {'buy':>5} {'made after (ms)':>15}"]
    for p in newest:
        cats = " ".join(f"{c}({score:.2f})" for c, score in p.top_categories[:3])
        event, prob = max(p.next_event_type.items(), key=lambda kv: kv[1])
        # replayed history has old event times: show how long after reaching the worker it was made
        t = p.timing
        made_after = t.batch_wait_ms + t.window_ms + t.inference_ms if t is not None else 0.0
        lines.append(f"{p.user_id[:14]:>14} {cats[:44]:<44} {event + f' {prob:.2f}':<18} "
                     f"{p.purchase_probability:5.2f} {made_after:15.1f}")
    if sys.stdout.isatty():
        click.echo("\x1b[H\x1b[2J", nl=False)
    click.echo("\n".join(lines))


@click.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@log_send_options
@env_option("--speed", env="CLICKSTREAM_SPEED", default="max", show_default=True,
            help="Pace by event time: 1x = as it happened, 60x = an hour per minute, max = no pacing.")
@env_option("--skip", "skip_events", env="CLICKSTREAM_SKIP", type=int, default=0, show_default=True,
            help="Skip the first N events (in replay order), to resume by hand.")
@send_options
def replay(logs: tuple[str, ...], fmt: str, mapping: str | None, strict: bool, id_prefix: str | None, speed: str,
           skip_events: int, checkpoint: str | None, topic: str | None, config_file: str | None,
           broker: str | None, quiet: bool) -> None:
    """Backfill: send LOGS to the clicks topic in event-time order with their original timestamps."""
    from cli.replay import ReplayCounters, count_lines, in_event_time_order, merge_by_time, pacing, parse_speed

    if skip_events < 0:
        raise click.UsageError("--skip must be >= 0")
    s = settings_from(config_file, broker=broker, clicks_topic=topic)
    pace = pacing(parse_speed(speed))
    saved = Checkpoint(checkpoint, [str(Path(p).resolve()) for p in logs])
    start_at = max(skip_events, saved.load())
    reports: list[ReadReport] = []
    counters = ReplayCounters()
    ordered = [in_event_time_order(iter_logs([path], fmt, mapping, strict,
                                             f"{id_prefix}-{Path(path).name}" if id_prefix and len(logs) > 1
                                             else id_prefix, reports), counters) for path in logs]
    clicks = skip(merge_by_time(ordered) if len(ordered) > 1 else ordered[0], start_at)
    total = max(0, sum(count_lines(p) for p in logs) - start_at)
    try:
        _send(s, s.clicks_topic, clicks, pace, total, quiet, "replay", saved, start_at)
    finally:
        _report_reads(reports)
        if counters.late:
            click.echo(f"{counters.late} events were more out of order than the reorder buffer and went late",
                       err=True)


