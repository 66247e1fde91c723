from __future__ import annotations

import dataclasses
import io
import json
import string
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import DecodeError
from schemas.codec import SCHEMA_DIR, AvroCodec, load_schema, single_object_fingerprint

ids = st.text(min_size=1, max_size=40)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
clicks = st.fixed_dictionaries({
    "event_id": ids, "user_id": ids, "session_id": st.none() | ids, "item_id": ids,
    # 19-digit category ids (REES46) must survive as they are
    "category_id": ids | st.integers(min_value=10**18, max_value=2**63 - 1).map(str),
    "event_type": st.sampled_from(["unknown", "view", "fav", "cart", "remove_from_cart", "purchase"]),
    "event_time_ms": longs,
    "price": st.none() | st.floats(allow_nan=False),
    "user_attributes": st.dictionaries(st.text(string.ascii_letters, max_size=8), st.text(max_size=8), max_size=3),
})
float32s = st.floats(width=32, allow_nan=False)
predictions = st.fixed_dictionaries({
    "event_id": ids, "user_id": ids, "event_time_ms": longs, "predicted_at_ms": longs, "model_version": ids,
    "top_categories": st.lists(st.fixed_dictionaries({"category_id": ids, "score": float32s}), max_size=10),
    "next_event_type": st.dictionaries(st.sampled_from(["view", "cart", "fav", "purchase"]), float32s),
    "purchase_probability": float32s,
    "window_length": st.integers(min_value=0, max_value=2**31 - 1),
    "timing": st.none() | st.fixed_dictionaries({
        "batch_size": st.integers(min_value=0, max_value=2**31 - 1), "batch_wait_ms": float32s,
        "window_ms": float32s, "inference_ms": float32s}),
    "drivers": st.none() | st.lists(st.fixed_dictionaries({
        "position": st.integers(min_value=0, max_value=2**31 - 1), "category_id": ids, "event_type": ids,
        "event_time_ms": longs, "weight": float32s}), max_size=3),
})

CLICK = AvroCodec("click")
FRAMED = AvroCodec("click", schema_id=7)


@settings(max_examples=300)
@given(clicks)
def test_click_round_trip(click: dict) -> None:
    assert CLICK.decode(CLICK.encode(click)) == click
    assert FRAMED.decode(FRAMED.encode(click)) == click


@settings(max_examples=200)
@given(predictions)
def test_prediction_round_trip(prediction: dict) -> None:
    codec = AvroCodec("prediction")
    assert codec.decode(codec.encode(prediction)) == prediction
    # the codec names the timing record's union branch for speed: the bytes are fastavro's own
    plain = io.BytesIO()
    fastavro.schemaless_writer(plain, load_schema("prediction"), prediction)
    assert codec.encode(prediction) == plain.getvalue()


def test_confluent_framing_layout() -> None:
    click = {"event_id": "e", "user_id": "u", "item_id": "i", "category_id": "c", "event_type": "view",
             "event_time_ms": 1}
    framed = FRAMED.encode(click)
    # magic byte 0, then schema id 7 as 4 big-endian bytes, then the plain Avro body
    assert framed[:5] == b"\x00\x00\x00\x00\x07"
    assert framed[5:] == CLICK.encode(click)
    with pytest.raises(DecodeError, match="schema id 7, expected 8"):
        AvroCodec("click", schema_id=8).decode(framed)
    with pytest.raises(DecodeError, match="magic byte"):
        FRAMED.decode(b"\x01" + framed[1:])
    with pytest.raises(DecodeError, match="too short"):
        FRAMED.decode(b"\x00\x00")


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_decode_error_or_round_trip(data: bytes) -> None:
    try:
        record = CLICK.decode(data)
    except DecodeError:
        return
    # the rare random bytes that are a valid click must be exactly that click's encoding
    assert CLICK.encode(record) == data


@settings(max_examples=200)
@given(clicks, st.data())
def test_truncated_bytes_raise_decode_error(click: dict, data: st.DataObject) -> None:
    encoded = CLICK.encode(click)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(DecodeError):
        CLICK.decode(encoded[:cut])


def test_trailing_bytes_and_wrong_type_raise_decode_error() -> None:
    encoded = CLICK.encode({"event_id": "e", "user_id": "u", "item_id": "i", "category_id": "c",
                            "event_type": "view", "event_time_ms": 1})
    with pytest.raises(DecodeError, match="trailing"):
        CLICK.decode(encoded + b"\x00")
    with pytest.raises(DecodeError, match="expected bytes"):
        CLICK.decode("not bytes")  # type: ignore[arg-type]


NEWER = Path(__file__).parent / "data"


def test_single_object_messages_of_older_and_newer_writers_are_resolved() -> None:
    click = {"event_id": "e", "user_id": "u", "item_id": "i", "category_id": "c", "event_type": "cart",
             "event_time_ms": 1, "session_id": None, "price": None, "user_attributes": {}}
    reader = AvroCodec("click", schema_dir=str(NEWER))
    # the released version 1, single-object encoded
    older = AvroCodec("click", single_object=True).encode(click)
    assert older[:2] == b"\xc3\x01" and reader.decode(older) == click
    # a newer producer: an extra field with a default and an event type this reader does not know
    newer_schema = fastavro.parse_schema(json.loads((NEWER / "click.v2-newer.avsc").read_text()))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, newer_schema, {**click, "event_type": "share", "device": "app"})
    newer = b"\xc3\x01" + single_object_fingerprint(newer_schema) + body.getvalue()
    assert reader.decode(newer) == {**click, "event_type": "unknown"}
    # without the newer schema at hand, the message is refused with the fix in the reason
    with pytest.raises(DecodeError, match="unknown schema .* CLICKSTREAM_SCHEMA_DIR"):
        AvroCodec("click").decode(newer)
    # bare messages still read as before
    assert reader.decode(CLICK.encode(click)) == click


def test_predictions_with_drivers_and_readers_of_the_previous_version_understand_each_other() -> None:
    from core.records import Driver, Prediction
    from schemas.codec import RecordCodec

    previous = fastavro.parse_schema(json.loads((SCHEMA_DIR / "history" / "prediction.v2.avsc").read_text()))
    prediction = Prediction(event_id="e", user_id="u", event_time_ms=1, predicted_at_ms=2, model_version="m",
                            top_categories=(("c7", 0.5),), next_event_type={"view": 1.0}, purchase_probability=0.25,
                            window_length=3, drivers=(Driver(2, "c7", "cart", 1, 0.375), Driver(0, "c7", "view", 0, 0.125)))
    codec = RecordCodec(Prediction, single_object=True)
    new = codec.encode(prediction)
    assert codec.decode(new) == prediction
    # a consumer still on v2 reads the new message: the drivers are skipped
    old_view = fastavro.schemaless_reader(io.BytesIO(new[10:]), load_schema("prediction"), previous)
    assert "drivers" not in old_view and old_view["top_categories"] == [{"category_id": "c7", "score": 0.5}]
    # and this reader reads a v2 producer's message, by its fingerprint: no drivers
    body = io.BytesIO()
    fastavro.schemaless_writer(body, previous, {k: v for k, v in prediction.to_avro().items() if k != "drivers"})
    old = b"\xc3\x01" + single_object_fingerprint(previous) + body.getvalue()
    assert codec.decode(old) == dataclasses.replace(prediction, drivers=None)
