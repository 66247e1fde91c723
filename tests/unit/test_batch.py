"""The worker's per-batch logic without a broker: messages in -> predictions, dead letters, rekeys, windows."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.records import Click, Driver, Prediction
from model.window import Window
from schemas.codec import RecordCodec
from streams.batch import (
    DEAD_LETTER_MAX_VALUE_BYTES,
    BatchProcessor,
    Message,
    SystemicFailure,
    check_click,
    predict_isolating,
)
from streams.window import UserWindow

NOW_MS = 1_700_000_000_000
CLICK, PREDICTION = RecordCodec(Click), RecordCodec(Prediction)
TYPES = ("unknown", "view", "fav", "cart", "remove_from_cart", "purchase")


@dataclasses.dataclass
class Batch:
    top_categories: list[list[tuple[str, float]]]
    event_type_probs: np.ndarray
    purchase_probability: np.ndarray
    window_lengths: np.ndarray
    event_types: tuple[str, ...] = TYPES
    drivers: list[tuple[Driver, ...]] | None = None


class RepeatLast:
    """A stand-in predictor: the newest category of the window, all event types equally likely; it raises
    on windows whose newest category is ``poison`` (a window the real network could fail on). With
    ``drivers`` it names, as a predictor asked for drivers does, the window's events of the top category."""

    def __init__(self, drivers: bool = False) -> None:
        self.calls = 0
        self.drivers = drivers

    def predict(self, windows: Sequence[Window]) -> Batch:
        self.calls += 1
        if any(w.categories[-1] == "poison" for w in windows):
            raise ValueError("cannot predict poison")
        n = len(windows)
        drivers = [tuple(Driver(i, c, "view", int(w.times_ms[i]), 2.0 ** (i + 1 - len(w)))
                         for i, c in reversed(list(enumerate(w.categories))) if c == w.categories[-1])
                   for w in windows] if self.drivers else None
        return Batch([[(w.categories[-1], 1.0)] for w in windows], np.full((n, len(TYPES)), 1 / len(TYPES)),
                     np.full(n, 0.25), np.array([len(w) for w in windows]), drivers=drivers)


def click(event_id: str, user: str = "u", category: str = "c", t: int = NOW_MS) -> Click:
    return Click(event_id=event_id, user_id=user, item_id="i", category_id=category, event_type="view",
                 event_time_ms=t)


def message(value: bytes, key: bytes | None, offset: int) -> Message:
    return Message(key=key, value=value, topic="clicks", partition=offset % 4, offset=offset, received_s=0.0)


def keyed(c: Click, offset: int) -> Message:
    return message(CLICK.encode(c), c.key, offset)


def run(messages: list[Message], store: dict[bytes, bytes], predictor: RepeatLast | None = None) -> tuple:
    predictor = predictor or RepeatLast()
    processor = BatchProcessor(click_codec=CLICK, prediction_codec=PREDICTION, window_length=3,
                               model_version="v1", clock=lambda: NOW_MS / 1000)

    async def infer(windows: Sequence[Window]) -> tuple:
        return predict_isolating(predictor.predict, windows)

    result = asyncio.run(processor.process(messages, store.get, infer))
    return result, processor


def test_a_batch_becomes_predictions_dead_letters_rekeys_and_window_writes() -> None:
    store = {b"u": UserWindow.empty().pack()}
    messages = [keyed(click("a", category="x"), 0), keyed(click("b", category="y", t=NOW_MS + 1), 1),
                message(b"\xff\xfe", b"u", 2),  # garbage
                message(CLICK.encode(click("c", user="v", category="z")), None, 3),  # unkeyed
                keyed(click("a", category="x"), 4),  # re-delivered
                keyed(click("d", user="w", category="q"), 5)]
    result, processor = run(messages, store)
    predictions = [PREDICTION.decode(p.value) for p in result.predictions]
    # every valid keyed click is predicted, in order, from its user's events up to it (a re-delivered one too)
    assert [(p.event_id, p.top_categories[0][0], p.window_length) for p in predictions] == [
        ("a", "x", 1), ("b", "y", 2), ("a", "x", 1), ("d", "q", 1)]
    assert all(p.model_version == "v1" and p.timing is not None and p.timing.batch_size == 4 for p in predictions)
    assert abs(sum(predictions[0].next_event_type.values()) - 1) < 1e-6 and "unknown" not in predictions[0].next_event_type
    assert [p.key for p in result.predictions] == [b"u", b"u", b"u", b"w"]
    # each prediction with its click and the index of the click's message (for demand and audiences)
    assert [(c.event_id, p.event_id, i) for c, p, i in result.made] == [("a", "a", 0), ("b", "b", 1), ("a", "a", 4),
                                                                        ("d", "d", 5)]
    (dead,) = result.dead_letters
    headers = dict(dead.headers)
    assert dead.value == b"\xff\xfe" and headers["reason"].startswith(b"undecodable")
    assert (headers["source_topic"], headers["partition"], headers["offset"]) == (b"clicks", b"2", b"2")
    (rekeyed,) = result.rekeyed
    assert rekeyed.key == b"v" and rekeyed.value == messages[3].value
    # one write per user, filed under the user's newest message
    assert set(result.window_writes) == {b"u", b"w"}
    packed, index = result.window_writes[b"u"]
    assert UserWindow.unpack(packed).categories == ["x", "y"] and index == 4
    assert processor.stream_time_ms == NOW_MS + 1
    c = processor.counters
    assert (c.clicks, c.predictions, c.dead_letters, c.rekeyed, c.batches) == (6, 4, 1, 1, 1)


def test_predictions_carry_the_drivers_only_when_the_predictor_gives_them() -> None:
    messages = [keyed(click("a", category="x", t=NOW_MS - 2), 0), keyed(click("b", category="y", t=NOW_MS - 1), 1),
                keyed(click("c", category="x"), 2), keyed(click("d", user="w", category="q"), 3)]
    result, _ = run(messages, {}, RepeatLast(drivers=True))
    predictions = [PREDICTION.decode(p.value) for p in result.predictions]
    # the stand-in's drivers of each window's top (newest) category, through the Avro codec and back
    assert [p.drivers for p in predictions] == [
        (Driver(0, "x", "view", NOW_MS - 2, 1.0),),
        (Driver(1, "y", "view", NOW_MS - 1, 1.0),),
        (Driver(2, "x", "view", NOW_MS, 1.0), Driver(0, "x", "view", NOW_MS - 2, 0.25)),
        (Driver(0, "q", "view", NOW_MS, 1.0),)]
    # a predictor not asked for drivers: the field stays null, as in every prediction before it existed
    result, _ = run(messages, {}, RepeatLast())
    assert all(PREDICTION.decode(p.value).drivers is None for p in result.predictions)


def test_oversized_messages_are_dead_lettered_within_the_producer_limit() -> None:
    huge = bytes(range(256)) * 4000  # 1,024,000 bytes: more than the producer takes
    result, _ = run([message(huge, b"k" * 5000, 0), keyed(click("a"), 1)], {})
    (dead,) = result.dead_letters
    headers = dict(dead.headers)
    assert len(dead.value) == DEAD_LETTER_MAX_VALUE_BYTES and len(dead.key or b"") <= 1024
    assert headers["original_size"] == b"1024000"
    assert headers["original_sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert len(result.predictions) == 1


def test_a_window_the_predictor_fails_on_is_dead_lettered_and_the_rest_predicted() -> None:
    predictor = RepeatLast()
    messages = [keyed(click(f"e{i}", user=f"u{i}", category="poison" if i == 5 else "ok"), i) for i in range(8)]
    result, _ = run(messages, {}, predictor)
    assert sorted(PREDICTION.decode(p.value).event_id for p in result.predictions) == \
        sorted(f"e{i}" for i in range(8) if i != 5)
    (dead,) = result.dead_letters
    assert dead.value == messages[5].value
    assert dict(dead.headers)["reason"] == b"prediction failed: ValueError: cannot predict poison"
    assert predictor.calls > 1


def test_a_predictor_that_fails_on_everything_is_a_systemic_failure() -> None:
    messages = [keyed(click(f"e{i}", user=f"u{i}", category="poison"), i) for i in range(4)]
    with pytest.raises(SystemicFailure, match="failed on all 4 windows"):
        run(messages, {})


def test_predict_isolating_makes_one_call_when_nothing_fails() -> None:
    predictor = RepeatLast()
    windows = [Window(["a"], np.ones(1, np.int8), np.zeros(1, np.int64))] * 5
    pieces, failed = predict_isolating(predictor.predict, windows)
    assert predictor.calls == 1 and not failed and pieces[0][0].tolist() == [0, 1, 2, 3, 4]


headers_of = st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=2)
valid_clicks = st.builds(click, st.text(min_size=1, max_size=8), st.sampled_from(["u1", "u2", "u3"]),
                         st.sampled_from(["x", "y", "poison"]), st.integers(NOW_MS - 10**9, NOW_MS))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.binary(max_size=300), st.none() | st.binary(max_size=20)),  # arbitrary bytes and keys
    valid_clicks.map(lambda c: (CLICK.encode(c), c.key)),  # valid keyed clicks
    valid_clicks.map(lambda c: (CLICK.encode(c), None)),  # valid unkeyed clicks
    valid_clicks.map(lambda c: (CLICK.encode(dataclasses.replace(c, event_time_ms=5)), c.key)),  # absurd time
), min_size=1, max_size=40))
def test_every_message_is_accounted_for_whatever_arrives(items: list) -> None:
    messages = [message(value, key, i) for i, (value, key) in enumerate(items)]
    try:
        result, _ = run(messages, {})
    except SystemicFailure:
        # only when every window the predictor saw ends in a poison click (a re-delivered event id's window
        # ends in the category first stored for it)
        decoded = [check_click(m.value, CLICK, NOW_MS)[0] for m in messages]
        predicted = [c for c, m in zip(decoded, messages) if c is not None and c.key == m.key]
        assert predicted and any(c.category_id == "poison" for c in predicted)
        return
    out = len(result.predictions) + len(result.dead_letters) + len(result.rekeyed)
    assert out == len(messages)


class BreaksAfter(RepeatLast):
    """Predicts ``good`` calls, then fails on every call: a predictor that breaks in the middle of a bisection."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def predict(self, windows: Sequence[Window]) -> Any:
        if self.calls >= self.good:
            self.calls += 1
            raise RuntimeError("the predictor is broken")
        return super().predict(windows)


def test_a_predictor_that_breaks_while_isolating_a_poison_window_is_a_systemic_failure() -> None:
    # call 1 fails on the poison window, call 2 predicts the first half, call 3 fails on the poison window
    # again, then everything fails: the valid windows of the second half must not be dead-lettered as poison
    messages = [keyed(click(f"e{i}", user=f"u{i}", category="poison" if i == 7 else "ok"), i) for i in range(8)]
    with pytest.raises(SystemicFailure, match="broke while isolating"):
        run(messages, {}, BreaksAfter(good=3))


def test_a_window_that_fails_once_and_then_predicts_is_not_dead_lettered() -> None:
    class FlakyOnce(RepeatLast):
        def predict(self, windows: Sequence[Window]) -> Any:
            if self.calls < 2:  # the whole batch, then e0 alone
                self.calls += 1
                raise RuntimeError("transient")
            return super().predict(windows)

    messages = [keyed(click("e0", user="u0"), 0), keyed(click("p", user="p", category="poison"), 1)]
    result, _ = run(messages, {}, FlakyOnce())
    assert [PREDICTION.decode(p.value).event_id for p in result.predictions] == ["e0"]
    assert len(result.dead_letters) == 1  # the poison window still fails alone, and e0 still predicts
