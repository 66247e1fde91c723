"""Marketing audiences: which users' predictions cross the purchase threshold, free of Faust.

:class:`AudienceGate` looks at each prediction after the user's click. A user enters the audience (an
:class:`~core.derived_records.AudienceEntry`) when the purchase probability is at least ``threshold`` while
the user is *armed*; entering disarms, and only a probability below ``rearm_threshold`` arms again
(hysteresis). A user enters at most once per session: the click's ``session_id`` when it has one, else the
run of the user's clicks without an event-time gap of ``session_gap_ms`` (read from the user's window).

State per user (:class:`AudienceState`) is kept by the caller in the table ``user_to_audience``; the gate
returns a write only when a user's state changes, so the table sees a write per entry or re-arming, not per
click. A re-delivered click that made the user enter (its event id is in the state) sends its entry again:
after a crash between the state write and the entry's delivery the entry is not lost, and a consumer drops
the duplicate by event id.
"""
from __future__ import annotations

import bisect
import dataclasses
import struct
from collections.abc import Callable, MutableMapping, Sequence

from core.derived_records import AudienceEntry
from core.errors import DecodeError
from core.records import Click, Prediction
from streams.window import prefixed, read_prefixed

VERSION = 1
_HEADER = struct.Struct("<BBq")  # version, armed, event time of the last entry
TOP_CATEGORIES = 3


@dataclasses.dataclass(frozen=True, slots=True)
class AudienceState:
    """A user's gate: armed or not, and the last entry (session, click event id and time; empty: none)."""

    armed: bool = True
    entered_session: str = ""
    entered_event_id: str = ""
    entered_event_ms: int = 0

    def pack(self) -> bytes:
        return b"".join([_HEADER.pack(VERSION, int(self.armed), self.entered_event_ms),
                         prefixed(self.entered_session), prefixed(self.entered_event_id)])

    @classmethod
    def unpack(cls, data: bytes) -> AudienceState:
        try:
            version, armed, event_ms = _HEADER.unpack_from(data)
            if version != VERSION:
                raise DecodeError(f"audience state format {version}, this code reads {VERSION}")
            session, at = read_prefixed(data, _HEADER.size)
            event_id, _ = read_prefixed(data, at)
        except IndexError:
            raise DecodeError("corrupt audience state (text runs past the end)") from None
        except (struct.error, UnicodeDecodeError) as exc:
            raise DecodeError(f"corrupt audience state ({exc})") from None
        return cls(bool(armed), session, event_id, event_ms)


NEVER_ENTERED = AudienceState()
TimesOf = Callable[[bytes], tuple[Sequence[int], bool]]


def gap_session_start(times_ms: Sequence[int], t: int, gap_ms: int, truncated: bool) -> tuple[int, bool]:
    """Start of the session holding event time ``t``, from a user's sorted event times: the first event after
    the last gap of at least ``gap_ms`` before ``t``, and whether that start is certain. It is not when no
    gap was seen and the window is ``truncated`` (older events were dropped): the session may have started
    before the window's oldest event. A window that was never full holds every event since the user's first
    one or since the window expired (an idle time longer than any session gap)."""
    at = bisect.bisect_right(times_ms, t)
    start = t
    for i in range(at - 1, -1, -1):
        if start - times_ms[i] >= gap_ms:
            return start, True
        start = times_ms[i]
    return start, not truncated


@dataclasses.dataclass
class AudienceResult:
    entries: list[AudienceEntry] = dataclasses.field(default_factory=list)
    writes: dict[bytes, tuple[AudienceState, int]] = dataclasses.field(default_factory=dict)  # key -> state, message


@dataclasses.dataclass
class AudienceCounters:
    entered: int = 0
    resent: int = 0
    rearmed: int = 0
    held_back: int = 0  # crossed the threshold again in a session the user already entered in


class AudienceGate:
    """Decides entries and state changes for a micro-batch's predictions."""

    def __init__(self, threshold: float, rearm_threshold: float, session_gap_ms: int,
                 states: MutableMapping[bytes, AudienceState] | None = None) -> None:
        self.threshold, self.rearm_threshold, self.session_gap_ms = threshold, rearm_threshold, session_gap_ms
        self.states: MutableMapping[bytes, AudienceState] = {} if states is None else states  # not NEVER_ENTERED
        self.counters = AudienceCounters()

    def process(self, made: Sequence[tuple[Click, Prediction, int]], times_of: TimesOf) -> AudienceResult:
        """``made``: (click, its prediction, index of its message) in batch order; ``times_of``: a user's sorted
        event times from the window and whether the window dropped older ones (called only when a user
        without session ids crosses the threshold)."""
        result = AudienceResult()
        states, threshold, rearm = self.states, self.threshold, self.rearm_threshold
        for click, prediction, index in made:
            p = prediction.purchase_probability
            key = click.key
            state = states.get(key, NEVER_ENTERED)
            if state.entered_event_id and state.entered_event_id == click.event_id:
                result.entries.append(self._entry(click, prediction, state.entered_session))
                self.counters.resent += 1
                continue
            if state.armed and p >= threshold:
                session, same = self._session(click, state, times_of)
                if same:
                    self.counters.held_back += 1
                    continue
                state = AudienceState(False, session, click.event_id, click.event_time_ms)
                result.entries.append(self._entry(click, prediction, session))
                self.counters.entered += 1
            elif not state.armed and p < rearm:
                state = dataclasses.replace(state, armed=True)
                self.counters.rearmed += 1
            else:
                continue
            states[key] = state
            result.writes[key] = (state, index)
        return result

    def _session(self, click: Click, state: AudienceState, times_of: TimesOf) -> tuple[str, bool]:
        """The click's session id, and whether the user's last entry was in that same session."""
        if click.session_id:
            return click.session_id, click.session_id == state.entered_session
        times, truncated = times_of(click.key)
        start, certain = gap_session_start(times, click.event_time_ms, self.session_gap_ms, truncated)
        if not state.entered_event_id:  # never entered: the start only names the session
            return f"{click.user_id}@{start}", False
        # an uncertain start: the last entry may be in this session, before the window's oldest event
        return f"{click.user_id}@{start}", state.entered_event_ms >= start or not certain

    def _entry(self, click: Click, prediction: Prediction, session: str) -> AudienceEntry:
        return AudienceEntry(user_id=click.user_id, session_id=session,
                             purchase_probability=prediction.purchase_probability, threshold=self.threshold,
                             top_categories=tuple(prediction.top_categories[:TOP_CATEGORIES]),
                             event_id=click.event_id, event_time_ms=click.event_time_ms,
                             predicted_at_ms=prediction.predicted_at_ms, model_version=prediction.model_version)
