"""What the worker derives from each micro-batch's predictions: category demand and marketing audiences.

Glue between the agent (``streams/agents.py``) and :class:`streams.deriving.Deriving`, which holds the pure
logic of ``streams/demand.py`` and ``streams/audience.py`` and runs in the inference engine
(``streams/inference.py``), which hands back each batch's :class:`~streams.deriving.Derivation`. :meth:`Derived.publish`
runs inside the agent's handled batch: the audience states it writes and the messages it returns go out with
the batch's predictions, before the batch is committed. Nothing here reads the predictions topic again:
Faust's per-message cost would eat the budget.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from streams import metrics
from streams.app import app, settings
from streams.batch import Outgoing
from streams.deriving import Derivation, DerivingConfig, Reassignment
from streams.faust_glue import TableWrite, write_table
from streams.topics import user_forgotten

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
    key_type=bytes, value_type=bytes, options={"driver": "rocksdict"}, extra_topic_configs=settings.changelog_configs(),
)


class Derived:
    """The worker's demand and audiences: the settings, the new assignments, and what each batch sends."""

    def __init__(self) -> None:
        self.config = DerivingConfig(settings.demand, tuple(settings.demand_windows_s), settings.demand_grace_s,
                                     settings.partitions, settings.audience, settings.audience_threshold,
                                     settings.audience_rearm_threshold, settings.audience_session_gap_s * 1000,
                                     settings.codec_options())
        self.assigned: set[int] | None = None  # partitions of the newest assignment, until the next batch
        self.next_report = time.monotonic() + COUNTERS_INTERVAL_S

    def on_assigned(self, partitions: set[int]) -> None:
        self.assigned = partitions

    def take_reassignment(self) -> Reassignment | None:
        """The newest assignment not yet applied, with its users' stored audience states (read from the
        recovered table), once: the batch that follows applies it where it is handled."""
        if self.assigned is None:
            return None
        partitions, self.assigned = frozenset(self.assigned), None
        states = dict(user_to_audience.items()) if self.config.audience else {}
        forgotten = {key: value for key, value in user_forgotten.items() if value is not None}
        log.info("partitions %s assigned; %d forgotten users and %d audience user states loaded",
                 sorted(partitions), len(forgotten), len(states))
        return Reassignment(partitions, states, forgotten)

    async def publish(self, events: Sequence[Any], out: Derivation,
                      on_failure: Callable[[BaseException], None]) -> list[tuple[Any, list[Outgoing]]]:
        """Store a batch's changed audience states; count it; return the messages to send, by topic.
        ``events`` are the batch's Faust events (indexed like its messages)."""
        started = time.monotonic()
        for warning in out.warnings:
            log.warning("%s", warning)
        if out.audience_writes:
            await write_table(user_to_audience, app.producer,
                              [TableWrite(key, packed, events[index])
                               for key, (packed, index) in out.audience_writes.items()], on_failure)
        if out.demand:
            metrics.demand_records.labels("true").inc(out.demand_complete)
            metrics.demand_records.labels("false").inc(len(out.demand) - out.demand_complete)
        if out.demand_counters is not None:
            metrics.demand_late.inc(out.demand_late)
            metrics.demand_open_windows.set(out.demand_open_windows)
        if out.audiences:
            metrics.audience_entries.labels("new").inc(len(out.audiences) - out.audiences_resent)
            metrics.audience_entries.labels("resent").inc(out.audiences_resent)
        metrics.stage_seconds.labels("derived").observe(out.seconds + time.monotonic() - started)
        if started >= self.next_report:
            self.next_report = started + COUNTERS_INTERVAL_S
            if out.demand_counters is not None:
                log.info("demand: %s, %d windows open", out.demand_counters, out.demand_open_windows)
            if out.audience_counters is not None:
                log.info("audiences: %s", out.audience_counters)
        return [(topic, outgoing) for topic, outgoing in ((demand_topic, out.demand), (audiences_topic, out.audiences))
                if outgoing]


derived = Derived()


@app.on_partitions_assigned.connect
async def on_partitions_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
    """The agent applies a new assignment before its next batch (not now: a batch may be in flight)."""
    derived.on_assigned({tp.partition for tp in assigned if tp.topic == settings.clicks_topic})
