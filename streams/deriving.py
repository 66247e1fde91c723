"""Category demand and audiences made from a handled batch, free of Faust: where the batch is handled.

:class:`Deriving` holds the worker's :class:`~streams.demand.DemandAggregator` and
:class:`~streams.audience.AudienceGate` and turns a :class:`~streams.batch.BatchResult`'s predictions into
:class:`Derivation`: the demand and audience messages, encoded, the audience states to store, and what the
worker's metrics and log count. It runs in the inference engine (streams/inference.py), which sends back
only what leaves the worker. ``streams/derived.py`` is the Faust side: the topics, the audience table, the metrics.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from core.derived_records import AudienceEntry, CategoryDemand
from core.errors import DecodeError
from schemas.codec import RecordCodec
from streams.audience import AudienceCounters, AudienceGate, AudienceState
from streams.batch import BatchResult, Message, Outgoing
from streams.demand import DemandAggregator, DemandCounters
from streams.window import UserWindow


@dataclasses.dataclass(frozen=True)
class DerivingConfig:
    """The settings of demand and audiences (picklable: the inference engine builds its own)."""

    demand: bool
    demand_windows_s: tuple[int, ...]
    demand_grace_s: int
    partitions: int
    audience: bool
    audience_threshold: float
    audience_rearm_threshold: float
    audience_session_gap_ms: int
    codec_options: dict[str, Any]


@dataclasses.dataclass
class Derivation:
    """What one batch derived. ``audience_writes`` maps a user key to the packed state (None: deleted, the user is
    forgotten) and the index of the message its table write is filed under; the counters are the totals after this batch."""

    demand: list[Outgoing] = dataclasses.field(default_factory=list)
    demand_complete: int = 0
    demand_late: int = 0  # predictions too late for their window, in this batch
    demand_open_windows: int = 0
    audiences: list[Outgoing] = dataclasses.field(default_factory=list)
    audiences_resent: int = 0
    audience_writes: dict[bytes, tuple[bytes | None, int]] = dataclasses.field(default_factory=dict)  # None: delete
    demand_counters: DemandCounters | None = None  # None: demand is off
    audience_counters: AudienceCounters | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)  # for the worker's log
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Reassignment:
    """The partitions of a new assignment, the stored audience states of their users and their forgotten users'
    records (packed; the forgotten ones apply to the batch processor, streams/inference.py)."""

    partitions: frozenset[int]
    audience_states: Mapping[bytes, bytes | None]
    forgotten: Mapping[bytes, bytes] = dataclasses.field(default_factory=dict)


class Deriving:
    """Demand windows and audience gates of the partitions this worker holds."""

    def __init__(self, config: DerivingConfig) -> None:
        self.demand = (DemandAggregator(config.demand_windows_s, config.demand_grace_s, config.partitions)
                       if config.demand else None)
        self.gate = (AudienceGate(config.audience_threshold, config.audience_rearm_threshold,
                                  config.audience_session_gap_ms) if config.audience else None)
        self.demand_codec = RecordCodec(CategoryDemand, **config.codec_options)
        self.audience_codec = RecordCodec(AudienceEntry, **config.codec_options)

    def state(self) -> tuple[DemandAggregator | None, AudienceGate | None]:
        """The open windows and the gates, for the :class:`Deriving` of a model rolled out in another process."""
        return self.demand, self.gate

    def adopt(self, state: tuple[DemandAggregator | None, AudienceGate | None]) -> None:
        self.demand, self.gate = state

    def reassign(self, reassignment: Reassignment, warnings: list[str]) -> None:
        """After a rebalance: drop the demand state of partitions gone elsewhere; take the audience states of the
        users this worker holds now from the (recovered) table. A corrupt state adds a warning."""
        if self.demand is not None:
            self.demand.keep_only(reassignment.partitions)
        if self.gate is not None:
            states: dict[bytes, AudienceState] = {}
            for key, value in reassignment.audience_states.items():
                if value is None:
                    continue
                try:
                    states[key] = AudienceState.unpack(value)
                except DecodeError as exc:
                    warnings.append(f"audience state of user {key!r} is corrupt ({exc}): treated as never entered")
            self.gate.states = states

    def derive(self, messages: Sequence[Message], result: BatchResult, window_length: int,
               reassignment: Reassignment | None = None) -> Derivation:
        """Feed a handled batch's predictions (``result.made``) to demand and audiences, after applying the
        assignment that came before the batch, if any."""
        started = time.monotonic()
        out = Derivation()
        if reassignment is not None:
            self.reassign(reassignment, out.warnings)
        if self.gate is not None:  # users forgotten by this batch: their audience state is deleted
            for key, index in result.forgotten_now.items():
                self.gate.states.pop(key, None)
                out.audience_writes[key] = (None, index)
        if self.demand is not None and result.made:
            late = self.demand.counters.late
            self.demand.add((messages[i].partition, p) for _, p, i in result.made)
            closed = self.demand.close_ready()
            out.demand_late = self.demand.counters.late - late
            out.demand = [Outgoing(r.key, self.demand_codec.encode(r)) for r in closed]
            out.demand_complete = sum(r.complete for r in closed)
        if self.gate is not None and result.made:
            windows = result.window_writes

            def times_of(key: bytes) -> tuple[list[int], bool]:
                window = UserWindow.unpack(windows[key][0])  # every predicted click's user has a window write
                return window.times_ms, len(window) >= window_length

            resent = self.gate.counters.resent
            decided = self.gate.process(result.made, times_of)
            out.audience_writes.update((key, (state.pack(), index)) for key, (state, index) in decided.writes.items())
            out.audiences = [Outgoing(e.key, self.audience_codec.encode(e)) for e in decided.entries]
            out.audiences_resent = self.gate.counters.resent - resent
        if self.demand is not None:
            out.demand_open_windows = self.demand.open_windows()
            out.demand_counters = dataclasses.replace(self.demand.counters)
        out.audience_counters = dataclasses.replace(self.gate.counters) if self.gate is not None else None
        out.seconds = time.monotonic() - started
        return out
