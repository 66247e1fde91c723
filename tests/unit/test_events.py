"""The one event-type table: codes are stored on disk and in Avro, so they may only ever be appended to."""
from __future__ import annotations

import json

from core.events import EVENT_TYPE_CODES, EVENT_TYPES, event_type_code
from schemas.codec import schema_path

# Codes that windows in RocksDB, changelogs and artifacts already hold: never change or remove one.
RELEASED = {"unknown": 0, "view": 1, "fav": 2, "cart": 3, "remove_from_cart": 4, "purchase": 5}


def test_released_codes_never_change() -> None:
    assert {name: EVENT_TYPE_CODES[name] for name in RELEASED} == RELEASED
    assert sorted(EVENT_TYPE_CODES.values()) == list(range(len(EVENT_TYPE_CODES)))  # appended, no holes


def test_the_click_schema_lists_the_same_types_in_code_order() -> None:
    schema = json.loads(schema_path("click").read_text())
    (field,) = [f for f in schema["fields"] if f["name"] == "event_type"]
    assert tuple(field["type"]["symbols"]) == EVENT_TYPES  # Avro encodes an enum by its position too
    assert field["type"]["default"] == "unknown"


def test_unknown_names_get_the_unknown_code() -> None:
    assert event_type_code("purchase") == 5 and event_type_code("wishlist") == 0
