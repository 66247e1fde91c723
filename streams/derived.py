"""What the worker derives from each micro-batch's predictions: category demand and marketing audiences.

Glue between the agent (``streams/agents.py``) and the pure logic of ``streams/demand.py`` and
``streams/audience.py``. :meth:`Derived.derive` runs inside the agent's handled batch: the audience states it
writes and the messages it returns go out with the batch's predictions, before the batch is acknowledged.
Nothing here reads the predictions topic again: Faust's per-message cost would eat the budget.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.derived_records import AudienceEntry, CategoryDemand
from core.errors import DecodeError
from schemas.codec import RecordCodec
from streams import metrics
from streams.app import app, settings
from streams.audience import AudienceGate, AudienceState
from streams.batch import BatchResult, Outgoing
from streams.demand import DemandAggregator
from streams.faust_glue import TableWrite, write_table
from streams.window import UserWindow

log = logging.getLogger(__name__)

COUNTERS_INTERVAL_S = 10.0
_raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw",
        "partitions": settings.partitions}
demand_topic = app.topic(settings.demand_topic, **_raw)
audiences_topic = app.topic(settings.audiences_topic, **_raw)

# Keyed and partitioned like user_to_window (streams/topics.py): a user's gate lives with the user's clicks.
# Written only when a user's gate changes (an entry, a re-arming), so it adds few changelog records.
user_to_audience = app.Table(
    "user_to_audience", default=None, use_partitioner=True, partitions=settings.partitions,
    key_type=bytes, value_type=bytes, options={"driver": "rocksdict"},
)


class Derived:
    """The worker's demand aggregator and audience gate, and what they send per batch."""

    def __init__(self) -> None:
        self.demand = (DemandAggregator(settings.demand_windows_s, settings.demand_grace_s, settings.partitions)
                       if settings.demand else None)
        self.gate = (AudienceGate(settings.audience_threshold, settings.audience_rearm_threshold,
                                  settings.audience_session_gap_s * 1000) if settings.audience else None)
        self.demand_codec = RecordCodec(CategoryDemand, **settings.codec_options())
        self.audience_codec = RecordCodec(AudienceEntry, **settings.codec_options())
        self.assigned: set[int] | None = None  # partitions of the newest assignment, until the next batch
        self.next_report = time.monotonic() + COUNTERS_INTERVAL_S

    def on_assigned(self, partitions: set[int]) -> None:
        self.assigned = partitions

    async def derive(self, events: Sequence[Any], result: BatchResult, window_length: int,
                     on_failure: Callable[[BaseException], None]) -> list[tuple[Any, list[Outgoing]]]:
        """Feed a handled batch's predictions to demand and audiences; store changed audience states; return
        the messages to send, by topic. ``events`` are the batch's Faust events (indexed like its messages)."""
        started = time.monotonic()
        if self.assigned is not None:
            self._reassigned(self.assigned)
            self.assigned = None
        out: list[tuple[Any, list[Outgoing]]] = []
        if self.demand is not None and result.made:
            late = self.demand.counters.late
            self.demand.add((events[i].message.partition, p) for _, p, i in result.made)
            closed = self.demand.close_ready()
            metrics.demand_late.inc(self.demand.counters.late - late)
            if closed:
                out.append((demand_topic, [Outgoing(r.key, self.demand_codec.encode(r)) for r in closed]))
                complete = sum(r.complete for r in closed)
                metrics.demand_records.labels("true").inc(complete)
                metrics.demand_records.labels("false").inc(len(closed) - complete)
            metrics.demand_open_windows.set(self.demand.open_windows())
        if self.gate is not None and result.made:
            windows = result.window_writes

            def times_of(key: bytes) -> tuple[list[int], bool]:
                window = UserWindow.unpack(windows[key][0])  # every predicted click's user has a window write
                return window.times_ms, len(window) >= window_length

            resent = self.gate.counters.resent
            decided = self.gate.process(result.made, times_of)
            if decided.writes:
                await write_table(user_to_audience, app.producer,
                                  [TableWrite(key, state.pack(), events[index])
                                   for key, (state, index) in decided.writes.items()], on_failure)
            if decided.entries:
                out.append((audiences_topic, [Outgoing(e.key, self.audience_codec.encode(e)) for e in decided.entries]))
                resent = self.gate.counters.resent - resent
                metrics.audience_entries.labels("new").inc(len(decided.entries) - resent)
                metrics.audience_entries.labels("resent").inc(resent)
        metrics.stage_seconds.labels("derived").observe(time.monotonic() - started)
        if started >= self.next_report:
            self.next_report = started + COUNTERS_INTERVAL_S
            if self.demand is not None:
                log.info("demand: %s, %d windows open", self.demand.counters, self.demand.open_windows())
            if self.gate is not None:
                log.info("audiences: %s", self.gate.counters)
        return out

    def _reassigned(self, partitions: set[int]) -> None:
        """After a rebalance: drop demand state of partitions gone elsewhere; reload the audience states of
        the partitions this worker owns now from the (recovered) table."""
        if self.demand is not None:
            self.demand.keep_only(partitions)
        if self.gate is not None:
            states: dict[bytes, AudienceState] = {}
            for key, value in user_to_audience.items():
                if value is None:
                    continue
                try:
                    states[key] = AudienceState.unpack(value)
                except DecodeError as exc:
                    log.warning("audience state of user %r is corrupt (%s): treated as never entered", key, exc)
            self.gate.states = states
            log.info("audiences: %d user states loaded for partitions %s", len(states), sorted(partitions))


derived = Derived()


@app.on_partitions_assigned.connect
async def on_partitions_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
    """The agent applies a new assignment before its next batch (not now: a batch may be in flight)."""
    derived.on_assigned({tp.partition for tp in assigned if tp.topic == settings.clicks_topic})
