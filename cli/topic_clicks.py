"""Clicks read back from a Kafka topic for training: a time range of the clicks topic, decoded as the worker
decodes them (bare Avro, single-object encoding or the Confluent framing; the same checks, so a message the
worker would dead-letter is skipped and counted here), one click at a time.

The topic is read up to its end as it is when the read starts; ``--since`` / ``--from-time`` seek each partition
to the first record whose timestamp is at or after the start (the replay and the producers of this project set
it to the event time; a producer's own send time is never earlier than the event), then every click is kept or
left by its event time. Clicks of forgotten users (core/privacy.py) are left out.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone

from core.errors import InputError
from core.logs import ReadReport
from core.records import Click
from core.settings import Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Milliseconds since the epoch from an ISO 8601 time (UTC unless it says otherwise), epoch milliseconds, or a
    duration before now (``7d``, ``12h``, ``90m``)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = text.strip()
    if match := _DURATION.match(value):
        return now_ms - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1000)
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{text!r} is not a time: give an ISO time (2017-12-01T08:00), epoch milliseconds, or a "
                         "duration before now (7d, 12h, 90m)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def clicks_from_topic(settings: Settings, topic: str, report: ReadReport, *, start_ms: int | None = None,
                      end_ms: int | None = None, progress: bool = True) -> Iterator[Click]:
    """The valid clicks of ``topic`` with event time in [start_ms, end_ms), partition after partition's records
    as they come; ``report`` counts the records read and the ones skipped (undecodable, invalid)."""
    from kafka import TopicPartition
    from tqdm import tqdm

    from core.kafka import consumer_at
    from core.privacy import ForgottenFilter
    from schemas.codec import RecordCodec
    from streams.batch import check_click

    forgotten = ForgottenFilter.read(settings)
    consumer = consumer_at(settings, topic, from_beginning=True, max_partition_fetch_bytes=4 << 20)
    try:
        assigned: list[TopicPartition] = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        ends = consumer.end_offsets(assigned)  # read to the end as it is now
        if start_ms is not None:
            found = consumer.offsets_for_times({tp: start_ms for tp in assigned})
            for tp in assigned:
                consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
        starts = {tp: consumer.position(tp) for tp in assigned}
        left = {tp for tp in assigned if starts[tp] < ends[tp]}
        codec = RecordCodec(Click, settings.schema_id_click, **settings.codec_options())
        bar = tqdm(total=sum(ends[tp] - starts[tp] for tp in assigned), desc=f"reading {topic}", unit=" records",
                   unit_scale=True, disable=not progress or None, file=sys.stderr, mininterval=0.5)
        now_ms = int(time.time() * 1000)
        outside = 0
        while left:
            polled = consumer.poll(timeout_ms=1000, max_records=5000)
            for tp, records in polled.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    report.rows += 1
                    click, reason = check_click(record.value, codec, now_ms)
                    if click is None:
                        report.add_bad(record.offset, f"partition {tp.partition}: {reason}")
                    elif (start_ms is None or click.event_time_ms >= start_ms) and \
                            (end_ms is None or click.event_time_ms < end_ms):
                        if forgotten.keeps(click.user_id, click.event_time_ms):
                            yield click
                    else:
                        outside += 1
                bar.update(sum(1 for r in records if r.offset < ends[tp]))
                if consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
                    consumer.pause(tp)
        bar.close()
        if outside:
            report.source += f" ({outside} valid clicks outside the time range left out)"
        if forgotten.dropped:
            report.source += f" ({forgotten.dropped} clicks of forgotten users left out)"
    finally:
        consumer.close()
    if report.rows == 0:
        span = " in that time range" if start_ms is not None else ""
        raise InputError(f"topic {topic!r} holds no records{span} at {settings.broker}")
