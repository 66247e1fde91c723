"""Forgetting a shopper without a broker (core/privacy.py, streams/batch.py, streams/deriving.py): the requests,
the records, and what a batch holding requests and clicks of forgotten users makes."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from core.errors import DecodeError
from core.privacy import ForgetRequest, Forgotten, ForgottenFilter, UserIds, forgotten_users
from core.settings import Settings
from model.window import Window
from streams.batch import BatchProcessor, Message, predict_isolating
from streams.deriving import Deriving
from streams.window import UserWindow
from tests.unit.test_batch import CLICK, NOW_MS, PREDICTION, RepeatLast, click, keyed
from tests.unit.test_deriving import CONFIG, batch

FORGET = "forget"


def request(user: str, offset: int, readmit: bool = False, at: int | None = NOW_MS) -> Message:
    r = ForgetRequest(user, readmit, at)
    return Message(r.key, r.to_json(), FORGET, offset % 4, offset, 0.0)


def run(messages: list[Message], store: dict[bytes, bytes], forgotten: dict[bytes, bytes]) -> Any:
    processor = BatchProcessor(click_codec=CLICK, prediction_codec=PREDICTION, window_length=3, model_version="v1",
                               clock=lambda: NOW_MS / 1000, forget_topic=FORGET)

    async def infer(windows: Sequence[Window]) -> tuple:
        return predict_isolating(RepeatLast().predict, windows)

    processor.forgotten = dict(forgotten)  # as an assignment gives them (streams/inference.py)
    return asyncio.run(processor.process(messages, store.get, infer)), processor


def window_of(*clicks: Any) -> bytes:
    w = UserWindow.empty()
    for c in clicks:
        w.add(c.event_id, c.category_id, c.event_type, c.event_time_ms, 3)
    return w.pack()


def test_a_request_deletes_the_window_records_the_user_and_no_click_of_the_batch_is_predicted() -> None:
    store = {b"u": window_of(click("old", category="x", t=NOW_MS - 10)), b"v": window_of(click("v0"))}
    # u's click comes before the request in the batch: the requests take effect first all the same
    messages = [keyed(click("a", user="u"), 0), request("u", 1), keyed(click("b", user="v"), 2),
                keyed(click("c", user="u", t=NOW_MS + 5), 3)]
    result, processor = run(messages, store, {})
    assert [p.key for p in result.predictions] == [b"v"]
    assert result.window_writes[b"u"] == (None, 1)  # deleted: a tombstone filed under the request's message
    assert result.window_writes[b"v"][0] is not None
    packed, index = result.forgotten_writes[b"u"]
    assert Forgotten.unpack(packed) == Forgotten(NOW_MS) and index == 1
    assert result.forgotten_now == {b"u": 1}
    assert result.dropped_forgotten == 2 and not result.dead_letters
    assert processor.counters.forget_requests == 1 and processor.counters.dropped_forgotten == 2
    assert processor.counters.clicks == 3  # requests are not clicks


def test_a_forgotten_user_stays_forgotten_until_readmitted_and_then_starts_a_new_history() -> None:
    forgotten = {b"u": Forgotten(NOW_MS - 100).pack()}
    result, _ = run([keyed(click("late", user="u", t=NOW_MS + 10), 0)], {}, forgotten)
    assert not result.predictions and result.dropped_forgotten == 1 and not result.window_writes
    # readmitted at NOW_MS: a click from before stays dropped, one from then on starts a new window
    messages = [request("u", 0, readmit=True), keyed(click("before", user="u", t=NOW_MS - 1), 1),
                keyed(click("after", user="u", category="y", t=NOW_MS), 2)]
    result, _ = run(messages, {}, forgotten)
    assert [p.key for p in result.predictions] == [b"u"] and result.dropped_forgotten == 1
    assert UserWindow.unpack(result.window_writes[b"u"][0]).categories == ["y"]
    assert Forgotten.unpack(result.forgotten_writes[b"u"][0]) == Forgotten(NOW_MS - 100, NOW_MS)
    assert not result.forgotten_now  # a readmission deletes nothing


def test_forgotten_and_readmitted_in_one_batch_keeps_nothing_of_the_old_window() -> None:
    store = {b"u": window_of(click("old", category="x", t=NOW_MS - 10))}
    messages = [request("u", 0, at=NOW_MS - 5), request("u", 1, readmit=True, at=NOW_MS),
                keyed(click("new", user="u", category="y", t=NOW_MS + 1), 2)]
    result, _ = run(messages, store, {})
    assert UserWindow.unpack(result.window_writes[b"u"][0]).categories == ["y"]  # not ["x", "y"]
    assert Forgotten.unpack(result.forgotten_writes[b"u"][0]) == Forgotten(NOW_MS - 5, NOW_MS)


def test_a_readmission_dated_before_the_forgetting_takes_effect_from_the_forgetting() -> None:
    forgotten = {b"u": Forgotten(NOW_MS).pack()}
    result, _ = run([request("u", 0, readmit=True, at=1), keyed(click("a", user="u", t=NOW_MS - 1), 1)], {},
                    forgotten)
    assert Forgotten.unpack(result.forgotten_writes[b"u"][0]) == Forgotten(NOW_MS, NOW_MS)
    assert result.dropped_forgotten == 1


def test_a_readmission_of_a_user_never_forgotten_changes_nothing() -> None:
    result, _ = run([request("u", 0, readmit=True), keyed(click("a", user="u"), 1)], {}, {})
    assert not result.forgotten_writes and len(result.predictions) == 1


def test_a_bad_request_is_dead_lettered() -> None:
    messages = [Message(b"u", b"not json", FORGET, 0, 0, 0.0), Message(None, b"{}", FORGET, 0, 1, 0.0),
                Message(b"u", b'{"user_id": "v"}', FORGET, 0, 2, 0.0), Message(b"u", b"[1]", FORGET, 0, 3, 0.0)]
    result, _ = run(messages, {}, {})
    assert len(result.dead_letters) == 4 and not result.forgotten_writes
    reasons = [dict(d.headers)["reason"].decode() for d in result.dead_letters]
    assert "keyed by its user id" in reasons[1] and "for user 'v' keyed by 'u'" in reasons[2]


def test_an_empty_request_forgets_and_a_corrupt_record_keeps_the_user_forgotten() -> None:
    assert ForgetRequest.parse(b"u", b"") == ForgetRequest("u")
    result, _ = run([keyed(click("a", user="u"), 0)], {}, {b"u": b"garbage"})
    assert result.dropped_forgotten == 1
    with pytest.raises(DecodeError):
        Forgotten.unpack(b"garbage")


def test_the_users_forgotten_by_a_batch_lose_their_audience_state() -> None:
    deriving = Deriving(CONFIG)
    deriving.derive(*batch([("u1", 0, 0.9, 0), ("u2", 0, 0.9, 1)]), 50)  # both enter: both have a state
    assert set(deriving.gate.states) == {b"u1", b"u2"}
    messages, result = batch([("u2", 1, 0.1, 1)])
    result.forgotten_now = {b"u1": 0}
    out = deriving.derive(messages, result, 50)
    assert out.audience_writes[b"u1"] == (None, 0) and set(deriving.gate.states) == {b"u2"}


def test_a_read_of_the_topic_keeps_each_users_newest_record() -> None:
    class Record:
        def __init__(self, key: bytes | None, value: bytes | None) -> None:
            self.key, self.value = key, value

    users = forgotten_users([Record(b"u", Forgotten(1).pack()), Record(b"v", Forgotten(2).pack()),
                             Record(b"u", Forgotten(1, 5).pack()), Record(b"v", None), Record(None, b"x")])
    assert users == {b"u": Forgotten(1, 5)}
    keep = ForgottenFilter(users)
    assert [keep.keeps("u", 4), keep.keeps("u", 5), keep.keeps("w", 0)] == [False, True, True]
    assert keep.dropped == 1


def test_pseudonymous_ids_replace_the_raw_id_where_it_enters() -> None:
    ids = UserIds("secret")
    pseudonym = ids.key_of("alice")
    assert pseudonym == ids.key_of("alice") != UserIds("other").key_of("alice") and "alice" not in pseudonym
    assert pseudonym.startswith("p1:") and len(pseudonym) == 35 and UserIds(None).key_of("alice") == "alice"
    assert "secret" not in repr(ids) and "secret" not in repr(Settings(user_id_key="secret"))
    processor = BatchProcessor(click_codec=CLICK, prediction_codec=PREDICTION, window_length=3, model_version="v1",
                               clock=lambda: NOW_MS / 1000, forget_topic=FORGET, rekeyed_topic="rekeyed",
                               user_ids=ids)

    async def infer(windows: Sequence[Window]) -> tuple:
        return predict_isolating(RepeatLast().predict, windows)

    # a click of the clicks topic, keyed by the raw id, goes round keyed and named by its pseudonym
    result = asyncio.run(processor.process([keyed(click("a", user="alice"), 0)], {}.get, infer))
    (rekeyed,) = result.rekeyed
    assert rekeyed.key == pseudonym.encode() and CLICK.decode(rekeyed.value).user_id == pseudonym
    assert not result.predictions and b"alice" not in rekeyed.value
    # back from the rekeyed topic it is predicted under the pseudonym, never hashed twice
    back = Message(rekeyed.key, rekeyed.value, "rekeyed", 0, 1, 0.0)
    result = asyncio.run(processor.process([back], {}.get, infer))
    assert [PREDICTION.decode(p.value).user_id for p in result.predictions] == [pseudonym]
    assert set(result.window_writes) == {pseudonym.encode()}
    # a forget request by raw id goes round by pseudonym, and is applied then
    result = asyncio.run(processor.process([request("alice", 2)], {}.get, infer))
    (sent,) = result.forget_rekeyed
    assert not result.forgotten_writes and sent.key == pseudonym.encode() and b"alice" not in sent.value
    result = asyncio.run(processor.process([Message(sent.key, sent.value, FORGET, 0, 3, 0.0)], {}.get, infer))
    assert set(result.forgotten_writes) == {pseudonym.encode()} and not result.forget_rekeyed
    # the CLI's filters look users up by the pseudonym of their raw id
    keep = ForgottenFilter({pseudonym.encode(): Forgotten(1)}, ids)
    assert not keep.keeps("alice", 5) and keep.keeps("bob", 5)


def test_the_engine_takes_the_forgotten_users_from_an_assignment_keeps_its_own_and_hands_them_over() -> None:
    import threading

    from streams.deriving import Reassignment
    from streams.inference import _answer, _QueueEnd

    class Predictor(RepeatLast):
        def shapes_to_compile(self) -> list:
            return []

    def engine() -> tuple[_QueueEnd, BatchProcessor]:
        ours, theirs = _QueueEnd.pair()
        processor = BatchProcessor(click_codec=CLICK, prediction_codec=PREDICTION, window_length=3,
                                   model_version="v1", clock=lambda: NOW_MS / 1000, forget_topic=FORGET)
        threading.Thread(target=_answer, args=(theirs, Predictor(), processor, Deriving(CONFIG)), daemon=True).start()
        return ours, processor

    def batch_of(conn: _QueueEnd, messages: list[Message], reassignment: Reassignment | None = None) -> Any:
        raw = [(m.key, m.value, m.topic, m.partition, m.offset, m.received_s) for m in messages]
        conn.send(("batch", raw, {}, 1, reassignment))
        return conn.recv()

    first, _ = engine()
    assigned = Reassignment(frozenset({0}), {}, {b"u": Forgotten(NOW_MS).pack()})
    result = batch_of(first, [keyed(click("a", user="u"), 0), keyed(click("b", user="v"), 1)], assigned)
    assert result.dropped_forgotten == 1 and len(result.predictions) == 1
    result = batch_of(first, [request("v", 2)])  # forgotten by this engine: its next batches know it
    result = batch_of(first, [keyed(click("c", user="v"), 3)])
    assert result.dropped_forgotten == 1 and not result.predictions
    # a new model's engine adopts them
    first.send(("handover",))
    state = first.recv()
    second, processor = engine()
    second.send(("adopt", state))
    second.recv()
    assert set(processor.forgotten) == {b"u", b"v"}
    result = batch_of(second, [keyed(click("d", user="u"), 4), keyed(click("e", user="v"), 5)])
    assert result.dropped_forgotten == 2
    first.close()
    second.close()
