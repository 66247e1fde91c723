"""The audience gate without a broker: threshold with hysteresis, once per session (by id and by gap),
writes only on change, and the state surviving a restart through its packed form."""
from __future__ import annotations

import pytest

from core.derived_records import AudienceEntry
from core.errors import DecodeError
from core.records import Click, Prediction
from schemas.codec import RecordCodec
from streams.audience import AudienceGate, AudienceState, gap_session_start

T0 = 1_700_000_000_000
MIN = 60_000


def made(user: str, p: float, t: int, session: str | None = "s1", event_id: str | None = None) -> tuple:
    event_id = event_id or f"{user}-{t}"
    click = Click(event_id=event_id, user_id=user, item_id="i", category_id="c", event_type="view",
                  event_time_ms=t, session_id=session)
    prediction = Prediction(event_id=event_id, user_id=user, event_time_ms=t, predicted_at_ms=t + 5,
                            model_version="v1", top_categories=(("a", 0.5), ("b", 0.25), ("c", 0.125), ("d", 0.0625)),
                            next_event_type={}, purchase_probability=p, window_length=1)
    return click, prediction


class Windows:
    """Event times per user, as the window table would hold them after the batch."""

    def __init__(self, items: list[tuple], truncated: bool = False) -> None:
        self.times: dict[bytes, list[int]] = {}
        for click, _ in items:
            self.times.setdefault(click.key, []).append(click.event_time_ms)
        self.truncated = truncated

    def __call__(self, key: bytes) -> tuple[list[int], bool]:
        return sorted(self.times[key]), self.truncated


def run(gate: AudienceGate, items: list[tuple], windows: Windows | None = None) -> tuple[list, dict]:
    result = gate.process([(c, p, i) for i, (c, p) in enumerate(items)], windows or Windows(items))
    return [(e.user_id, e.session_id, e.event_id) for e in result.entries], result.writes


def gate() -> AudienceGate:
    return AudienceGate(threshold=0.5, rearm_threshold=0.2, session_gap_ms=30 * MIN)


def test_enters_once_per_session_and_rearms_only_below_the_lower_threshold() -> None:
    g = gate()
    items = [made("u", p, T0 + i * MIN, session) for i, (p, session) in enumerate([
        (0.1, "s1"), (0.6, "s1"),  # enters
        (0.7, "s1"), (0.3, "s1"),  # disarmed; 0.3 is not below 0.2: still disarmed
        (0.1, "s1"), (0.8, "s1"),  # re-armed, but s1 was entered already: held back
        (0.9, "s2"),  # a new session, armed: enters
        (0.9, "s3"),  # a new session, but disarmed since s2: nothing (hysteresis)
        (0.15, "s3"), (0.55, "s3"),  # re-armed, then enters s3
    ])]
    entries, writes = run(g, items)
    assert entries == [("u", "s1", "u-" + str(T0 + MIN)), ("u", "s2", f"u-{T0 + 6 * MIN}"),
                       ("u", "s3", f"u-{T0 + 9 * MIN}")]
    assert writes[b"u"] == (AudienceState(False, "s3", f"u-{T0 + 9 * MIN}", T0 + 9 * MIN), 9)
    c = g.counters
    assert (c.entered, c.rearmed, c.held_back, c.resent) == (3, 2, 1, 0)


def test_state_is_written_only_when_it_changes() -> None:
    g = gate()
    quiet = [made(f"u{i}", 0.3, T0 + i) for i in range(50)]  # between the thresholds: nothing changes
    low = [made(f"v{i}", 0.01, T0 + i) for i in range(50)]  # never entered: already armed
    entries, writes = run(g, quiet + low)
    assert entries == [] and writes == {}
    entries, writes = run(g, [made("w", 0.9, T0)])
    assert len(entries) == 1 and set(writes) == {b"w"}
    assert run(g, [made("w", 0.9, T0 + 1)]) == ([], {})  # disarmed, no change


def test_sessions_by_event_time_gap_for_clicks_without_session_id() -> None:
    g = gate()
    times = [T0, T0 + 5 * MIN, T0 + 10 * MIN, T0 + 12 * MIN, T0 + 60 * MIN, T0 + 61 * MIN]
    probs = [0.9, 0.1, 0.9, 0.1, 0.9, 0.9]
    items = [made("u", p, t, session=None) for p, t in zip(probs, times)]
    entries, _ = run(g, items)
    # enters at T0; re-armed at 5 min; 10 min is the same session (no 30-minute gap): held back; 60 min
    # follows a 48-minute gap: a new session, named by its first click
    assert entries == [("u", f"u@{T0}", f"u-{T0}"), ("u", f"u@{T0 + 60 * MIN}", f"u-{T0 + 60 * MIN}")]


def test_without_a_gap_in_a_truncated_window_the_entry_may_be_in_this_session() -> None:
    g = gate()
    run(g, [made("u", 0.9, T0, session=None), made("u", 0.1, T0 + MIN, session=None)])
    later = [made("u", 0.9, T0 + 200 * MIN + i * MIN, session=None) for i in range(3)]
    assert run(g, later, Windows(later, truncated=True))[0] == []  # older events dropped: no proof of a new session
    assert run(g, later, Windows(later, truncated=False))[0] == [("u", f"u@{T0 + 200 * MIN}", f"u-{T0 + 200 * MIN}")]


def test_gap_session_start() -> None:
    times = [0, 10, 20, 100, 105, 300]
    assert gap_session_start(times, 105, 50, truncated=True) == (100, True)
    assert gap_session_start(times, 20, 50, truncated=True) == (0, False)
    assert gap_session_start(times, 20, 50, truncated=False) == (0, True)
    assert gap_session_start(times, 300, 50, truncated=True) == (300, True)
    assert gap_session_start(times, 110, 50, truncated=True) == (100, True)  # a time between events


def test_a_redelivered_click_that_entered_resends_its_entry_and_changes_nothing() -> None:
    g = gate()
    first = made("u", 0.9, T0, event_id="e1")
    entries, _ = run(g, [first])
    again, writes = run(g, [first])
    assert again == entries and writes == {}
    assert g.counters.resent == 1


def test_the_state_survives_a_restart_through_its_packed_form() -> None:
    before = gate()
    _, writes = run(before, [made("u", 0.9, T0), made("u", 0.1, T0 + MIN), made("v", 0.9, T0)])
    stored = {key: state.pack() for key, (state, _) in writes.items()}  # what the table's changelog holds
    after = AudienceGate(0.5, 0.2, 30 * MIN, states={k: AudienceState.unpack(v) for k, v in stored.items()})
    # u is armed again but already entered s1; v is still disarmed: neither enters in s1
    assert run(after, [made("u", 0.9, T0 + 2 * MIN), made("v", 0.9, T0 + 2 * MIN)])[0] == []
    assert run(after, [made("u", 0.9, T0 + 3 * MIN, "s2")])[0] == [("u", "s2", f"u-{T0 + 3 * MIN}")]
    fresh = gate()  # what a worker that lost its state would do: enter again in s1
    assert run(fresh, [made("u", 0.9, T0 + 2 * MIN)])[0] != []


def test_packed_state_round_trip_and_corruption() -> None:
    state = AudienceState(False, "sessión-1", "evt:42", T0)
    assert AudienceState.unpack(state.pack()) == state
    assert AudienceState.unpack(AudienceState().pack()) == AudienceState()
    with pytest.raises(DecodeError):
        AudienceState.unpack(state.pack()[:-2])
    with pytest.raises(DecodeError):
        AudienceState.unpack(b"\x09" + state.pack()[1:])


def test_an_entry_carries_its_reason() -> None:
    g = gate()
    click, prediction = made("u", 0.75, T0, "s9", event_id="e7")
    (entry,) = g.process([(click, prediction, 0)], Windows([(click, prediction)])).entries
    assert entry.purchase_probability == 0.75 and entry.threshold == 0.5
    assert entry.top_categories == (("a", 0.5), ("b", 0.25), ("c", 0.125))
    assert (entry.event_id, entry.event_time_ms, entry.session_id, entry.model_version) == ("e7", T0, "s9", "v1")
    codec = RecordCodec(AudienceEntry)
    assert codec.decode(codec.encode(entry)) == entry and entry.key == b"u"
