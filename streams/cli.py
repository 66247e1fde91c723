"""The ``clickstream`` command: topics, produce, subscribe, replay, train, evaluate.

Every option falls back to an environment variable, shown in ``--help``. Errors of this project become one
line on stderr and a non-zero exit code, in one place (:class:`CLI`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click

from streams.errors import ClickstreamError, InputError
from streams.logs import FORMATS, ColumnMapping, ReadReport, read_log
from streams.settings import Settings, load_settings


class CLI(click.Group):
    """Maps ClickstreamError to one line and its exit code; Ctrl-C to exit code 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClickstreamError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def env_option(*decls: str, env: str, **kwargs: Any) -> Any:
    return click.option(*decls, envvar=env, show_envvar=True, **kwargs)


config_option = env_option("--config", "config_file", env="CLICKSTREAM_CONFIG", type=click.Path(dir_okay=False),
                           help="YAML settings file (defaults < file < CLICKSTREAM_* variables < options).")
broker_option = env_option("--broker", env="CLICKSTREAM_BROKER",
                           help="Kafka bootstrap servers, host:port[,host:port] (default 127.0.0.1:9092).")


def settings_from(config_file: str | None, **overrides: Any) -> Settings:
    return load_settings(config_file, **overrides)


@click.group(cls=CLI, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Streaming next-intent prediction for online shoppers.

    Produce clicks to Kafka, read the predictions the worker (`faust -A streams.app worker`) makes, replay
    history for backfill, and train and evaluate the model.
    """


@main.command()
@config_option
@broker_option
@env_option("--partitions", env="CLICKSTREAM_PARTITIONS", type=int,
            help="Partitions of each topic created (default 4).")
def topics(config_file: str | None, broker: str | None, partitions: int | None) -> None:
    """Create the clicks, predictions and dead-letter topics (existing ones are left alone)."""
    from streams.kafka_clients import ensure_topics

    s = settings_from(config_file, broker=broker, partitions=partitions)
    names = [s.clicks_topic, s.predictions_topic, s.dead_letter_topic]
    created = ensure_topics(s, names)
    for name in names:
        click.echo(f"{name}: {'created' if name in created else 'exists'}")


def log_options(f: Any) -> Any:
    """Options shared by the commands that read historical logs."""
    f = env_option("--strict", env="CLICKSTREAM_STRICT", is_flag=True,
                   help="Fail on the first bad row instead of skipping it.")(f)
    f = env_option("--id-prefix", env="CLICKSTREAM_ID_PREFIX",
                   help="Event ids are PREFIX:LINE (default: the file name); change it to replay with fresh ids.")(f)
    f = env_option("--mapping", env="CLICKSTREAM_MAPPING", type=click.Path(dir_okay=False),
                   help="YAML column mapping for --format generic.")(f)
    f = env_option("--format", "fmt", env="CLICKSTREAM_FORMAT", type=click.Choice(FORMATS), default="taobao",
                   show_default=True, help="Log format: Taobao UserBehavior, REES46, or generic CSV/JSONL.")(f)
    return f


def iter_logs(paths: Sequence[str], fmt: str, mapping: str | None, strict: bool, id_prefix: str | None,
              reports: list[ReadReport]) -> Iterator[dict[str, Any]]:
    """Clicks of several logs one after the other, a ReadReport per file appended to ``reports``."""
    column_mapping = ColumnMapping.load(mapping) if mapping else None
    for path in paths:  # fail before anything is sent, not after the first file
        if not Path(path).is_file():
            raise InputError(f"log file {path} does not exist")
    for path in paths:
        report = ReadReport(str(path))
        reports.append(report)
        # several files with one prefix would repeat PREFIX:LINE ids
        prefix = f"{id_prefix}-{path}" if id_prefix and len(paths) > 1 else id_prefix
        yield from read_log(path, fmt, mapping=column_mapping, strict=strict, report=report,  # type: ignore[arg-type]
                            id_prefix=prefix)


def _encoded(s: Settings, clicks: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, bytes, int]]:
    from schemas.codec import AvroCodec

    encode = AvroCodec("click", s.schema_id_click).encode
    for c in clicks:
        yield c["user_id"].encode(), encode(c), c["event_time_ms"]


def _progress(items: Iterable[Any], total: int | None, desc: str, quiet: bool) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit=" clicks", unit_scale=True, disable=quiet or None,
                file=sys.stderr, mininterval=0.5)


def _send(s: Settings, topic: str, clicks: Iterable[dict[str, Any]], due_s: Any, total: int | None,
          quiet: bool, desc: str, on_delivered: Any = None) -> None:
    from streams.kafka_clients import ensure_topics, send_all

    ensure_topics(s, [topic])
    stats = send_all(s, topic, _progress(_encoded(s, clicks), total, desc, quiet), due_s=due_s,
                     on_delivered=on_delivered)
    click.echo(f"{desc}: {stats.sent} clicks to {topic} in {stats.elapsed_s:.2f}s ({stats.rate:,.0f}/s)", err=True)
    if stats.failed:
        raise ClickstreamError(f"{stats.failed} clicks were not delivered (first error: {stats.first_error})")


def _report_reads(reports: list[ReadReport]) -> None:
    for r in reports:
        click.echo(r.summary(), err=True)


@main.command()
@click.argument("logs", nargs=-1, type=click.Path(dir_okay=False))
@log_options
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
@env_option("--topic", env="CLICKSTREAM_CLICKS_TOPIC", help="Target topic (default: clicks).")
@config_option
@broker_option
@env_option("--quiet", "-q", env="CLICKSTREAM_QUIET", is_flag=True, help="No progress bar.")
def produce(logs: tuple[str, ...], fmt: str, mapping: str | None, strict: bool, id_prefix: str | None,
            synthetic: bool, users: int, events: int, seed: int, rate: float, topic: str | None,
            config_file: str | None, broker: str | None, quiet: bool) -> None:
    """Send clicks, keyed by user id, from LOGS (file order) or from the synthetic shopper generator."""
    if bool(logs) == synthetic:
        raise click.UsageError("give log files or --synthetic (not both)")
    if rate < 0:
        raise click.UsageError("--rate must be >= 0")
    s = settings_from(config_file, broker=broker, clicks_topic=topic)
    reports: list[ReadReport] = []
    if synthetic:
        from streams.synthetic import synthetic_clicks

        clicks: Iterable[dict[str, Any]] = synthetic_clicks(users, events, seed=seed, id_prefix=id_prefix)
        total: int | None = events
    else:
        clicks, total = iter_logs(logs, fmt, mapping, strict, id_prefix, reports), None
    due_s = (lambda i, _ts: i / rate) if rate > 0 else None
    try:
        _send(s, s.clicks_topic, clicks, due_s, total, quiet, "produce")
    finally:
        _report_reads(reports)


@main.command()
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
    from schemas.codec import AvroCodec
    from streams.errors import DecodeError
    from streams.kafka_clients import consumer_at

    s = settings_from(config_file, broker=broker, predictions_topic=topic)
    codec = AvroCodec("prediction", s.schema_id_prediction)
    consumer = consumer_at(s, s.predictions_topic, from_beginning=from_beginning)
    wanted = set(users)
    seen = undecodable = 0
    latest: dict[str, dict[str, Any]] = {}
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
                    if wanted and p["user_id"] not in wanted:
                        continue
                    seen += 1
                    if table:
                        latest[p["user_id"]] = p
                    else:
                        click.echo(json.dumps(p, separators=(",", ":")))
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


def _draw_table(latest: dict[str, dict[str, Any]], seen: int, rows: int = 20) -> None:
    newest = sorted(latest.values(), key=lambda p: p["predicted_at_ms"], reverse=True)[:rows]
    lines = [f"{seen} predictions, {len(latest)} users; newest {len(newest)}:",
             f"{'user':>14} {'next categories (score)':<44} {'next event':<18} {'buy':>5} {'made after (ms)':>15}"]
    for p in newest:
        cats = " ".join(f"{c['category_id']}({c['score']:.2f})" for c in p["top_categories"][:3])
        event, prob = max(p["next_event_type"].items(), key=lambda kv: kv[1])
        # replayed history has old event times: show how long after reaching the worker it was made
        timing = p.get("timing") or {}
        made_after = timing.get("batch_wait_ms", 0) + timing.get("window_ms", 0) + timing.get("inference_ms", 0)
        lines.append(f"{p['user_id'][:14]:>14} {cats[:44]:<44} {event + f' {prob:.2f}':<18} "
                     f"{p['purchase_probability']:5.2f} {made_after:15.1f}")
    if sys.stdout.isatty():
        click.echo("\x1b[H\x1b[2J", nl=False)
    click.echo("\n".join(lines))


@main.command()
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@log_options
@env_option("--speed", env="CLICKSTREAM_SPEED", default="max", show_default=True,
            help="Pace by event time: 1x = as it happened, 60x = an hour per minute, max = no pacing.")
@env_option("--skip", "skip_events", env="CLICKSTREAM_SKIP", type=int, default=0, show_default=True,
            help="Skip the first N events (in replay order), to resume by hand.")
@env_option("--checkpoint", env="CLICKSTREAM_CHECKPOINT", type=click.Path(dir_okay=False),
            help="File that records how many events are delivered; a rerun resumes after them.")
@env_option("--topic", env="CLICKSTREAM_CLICKS_TOPIC", help="Target topic (default: clicks).")
@config_option
@broker_option
@env_option("--quiet", "-q", env="CLICKSTREAM_QUIET", is_flag=True, help="No progress bar.")
def replay(logs: tuple[str, ...], fmt: str, mapping: str | None, strict: bool, id_prefix: str | None, speed: str,
           skip_events: int, checkpoint: str | None, topic: str | None, config_file: str | None,
           broker: str | None, quiet: bool) -> None:
    """Backfill: send LOGS to the clicks topic in event-time order with their original timestamps."""
    from streams.replay import (Checkpoint, ReplayCounters, count_lines, in_event_time_order, merge_by_time,
                                pacing, parse_speed, skip)

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
    progress = {"delivered": 0, "saved_at": 0.0}

    def delivered(n: int) -> None:  # the file is written at most once a second, and once at the end
        progress["delivered"] = n
        if time.monotonic() - progress["saved_at"] > 1.0:
            saved.save(start_at + n)
            progress["saved_at"] = time.monotonic()

    try:
        _send(s, s.clicks_topic, clicks, pace, total, quiet, "replay", on_delivered=delivered)
    finally:
        saved.save(start_at + int(progress["delivered"]))
        _report_reads(reports)
        if counters.late:
            click.echo(f"{counters.late} events were more out of order than the reorder buffer and went late",
                       err=True)


# train / evaluate live with the model; importing them registers the commands (TensorFlow loads lazily)
import model.cli  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="clickstream")
