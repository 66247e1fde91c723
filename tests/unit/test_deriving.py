"""Demand and audiences where the batch is handled (streams/deriving.py), without a broker: what one batch
derives, a new assignment with a corrupt stored state, and the handover to a new model's inference process."""
from __future__ import annotations

import dataclasses
import pickle

from core.derived_records import AudienceEntry, CategoryDemand
from core.records import Click, Prediction
from schemas.codec import RecordCodec
from streams.audience import AudienceState
from streams.batch import BatchResult, Message
from streams.deriving import Derivation, Deriving, DerivingConfig, Reassignment
from streams.window import UserWindow

MIN = 60_000
T0 = 28_333_333 * MIN  # a minute boundary
CONFIG = DerivingConfig(demand=True, demand_windows_s=(60,), demand_grace_s=10, partitions=2, audience=True,
                        audience_threshold=0.5, audience_rearm_threshold=0.2, audience_session_gap_ms=30 * MIN,
                        codec_options={})


def batch(clicks: list[tuple[str, int, float, int]]) -> tuple[list[Message], BatchResult]:
    """(user, minute, purchase probability, partition) per click: the messages and the handled batch."""
    messages, result, windows = [], BatchResult(), {}
    for i, (user, minute, p, partition) in enumerate(clicks):
        t = T0 + minute * MIN
        click = Click(event_id=f"{user}-{minute}", user_id=user, item_id="i", category_id="c", event_type="view",
                      event_time_ms=t, session_id=f"s{minute // 30}")
        prediction = Prediction(event_id=click.event_id, user_id=user, event_time_ms=t, predicted_at_ms=t + 5,
                                model_version="v1", top_categories=(("a", 0.75), ("b", 0.25)), next_event_type={},
                                purchase_probability=p, window_length=1)
        messages.append(Message(click.key, b"", "clicks", partition, i, 0.0))
        result.made.append((click, prediction, i))
        window = windows.setdefault(click.key, UserWindow.empty())
        window.add(click.event_id, "c", "view", t, 50)
        result.window_writes[click.key] = (window.pack(), i)
    return messages, result


def test_a_batch_derives_encoded_demand_records_audience_entries_and_changed_states() -> None:
    deriving = Deriving(CONFIG)
    # minute 0 on both partitions, then a click 2 minutes on per partition: minute 0 closes on both
    out = deriving.derive(*batch([("u1", 0, 0.9, 0), ("u2", 0, 0.1, 1), ("u1", 2, 0.1, 0), ("u2", 2, 0.1, 1)]), 50)
    demand = [RecordCodec(CategoryDemand).decode(m.value) for m in out.demand]
    assert {(r.partition, r.category_id) for r in demand} == {(0, "a"), (0, "b"), (1, "a"), (1, "b")}
    assert all(r.window_start_ms == T0 and r.predictions == 1 for r in demand)
    assert out.demand_complete == 0  # the first minute each partition saw
    entries = [RecordCodec(AudienceEntry).decode(m.value) for m in out.audiences]
    assert [(e.user_id, e.event_id) for e in entries] == [("u1", "u1-0")]
    # u1 entered at minute 0 and re-armed at minute 2 (0.1 < 0.2): one write, the newest state, filed under
    # the message of the click that made it
    packed, index = out.audience_writes[b"u1"]
    assert AudienceState.unpack(packed) == AudienceState(True, "s0", "u1-0", T0) and index == 2
    assert b"u2" not in out.audience_writes  # never crossed: nothing to store
    assert out.demand_counters is not None and out.demand_counters.predictions == 4
    assert out.audience_counters is not None and out.audience_counters.entered == 1


def test_a_new_assignment_drops_other_partitions_and_takes_the_stored_states() -> None:
    deriving = Deriving(CONFIG)
    deriving.derive(*batch([("u1", 0, 0.1, 0), ("u2", 0, 0.1, 1)]), 50)
    disarmed = AudienceState(False, "s0", "u3-0", T0).pack()
    reassignment = Reassignment(frozenset({1}), {b"u3": disarmed, b"u4": b"\x07garbage", b"u5": None})
    out = deriving.derive(*batch([("u3", 1, 0.9, 1), ("u4", 1, 0.9, 1)]), 50, reassignment)
    assert len(out.warnings) == 1 and "u4" in out.warnings[0]  # corrupt: treated as never entered
    # u3 was disarmed in session s0 by the stored state: no entry; u4 enters
    assert [RecordCodec(AudienceEntry).decode(m.value).user_id for m in out.audiences] == ["u4"]
    assert set(deriving.demand.by_partition) == {1}  # partition 0's open windows went with it


def test_a_new_models_process_carries_on_from_the_open_windows_and_gates_it_adopts() -> None:
    first, successor, unbroken = Deriving(CONFIG), Deriving(CONFIG), Deriving(CONFIG)
    before = batch([("u1", 0, 0.9, 0), ("u2", 0, 0.3, 0)])
    after = batch([("u1", 1, 0.9, 0), ("u2", 2, 0.1, 0)])
    first.derive(*before, 50)
    unbroken.derive(*before, 50)
    successor.adopt(pickle.loads(pickle.dumps(first.state())))  # as it crosses the pipe
    carried, expected = successor.derive(*after, 50), unbroken.derive(*after, 50)
    def records(out: Derivation) -> list[CategoryDemand]:  # but for the wall-clock time they closed at
        return [dataclasses.replace(RecordCodec(CategoryDemand).decode(m.value), closed_at_ms=0) for m in out.demand]

    assert records(carried) == records(expected) != []
    assert carried.audiences == expected.audiences == []  # u1 entered before the handover: held back
    assert carried.audience_writes == expected.audience_writes
    assert carried.demand_counters == expected.demand_counters
