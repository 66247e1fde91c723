from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import DecodeError
from core.records import Click
from schemas.codec import RecordCodec
from streams.batch import check_click, stale_keys, update_windows
from streams.window import UserWindow

NOW_MS = 1_700_000_000_000


def test_add_dedupes_places_late_events_and_keeps_the_newest_n() -> None:
    w = UserWindow.empty()
    assert w.add("e1", "shoes", "view", 1000, max_events=3)
    assert w.add("e2", "hats", "cart", 3000, max_events=3)
    assert not w.add("e1", "shoes", "view", 1000, max_events=3)  # re-delivered
    assert w.add("e3", "socks", "view", 2000, max_events=3)  # late: placed by event time
    assert (w.categories, w.times_ms) == (["shoes", "socks", "hats"], [1000, 2000, 3000])
    assert w.add("e4", "bags", "purchase", 4000, max_events=3)
    assert w.categories == ["socks", "hats", "bags"] and w.event_types == [1, 3, 5]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.text(max_size=20),
                          st.sampled_from(["view", "cart", "purchase", "fav", "unknown"]),
                          st.integers(min_value=0, max_value=2**62)), max_size=60))
def test_pack_unpack_round_trip(events: list) -> None:
    w = UserWindow.empty()
    for event_id, category, event_type, t in events:
        w.add(event_id, category, event_type, t, max_events=50)
    back = UserWindow.unpack(w.pack())
    assert back == w
    if len(w):
        assert UserWindow.newest_ms_of(w.pack()) == w.newest_ms


def test_a_full_window_of_a_typical_shopper_is_small() -> None:
    w = UserWindow.empty()
    for i in range(50):
        w.add(f"UserBehavior-sample.csv:{100000 + i}", str(1_000_000 + i % 6), "view", 1_511_500_000_000 + 40_000 * i, 50)
    assert len(w.pack()) < 1024


def test_corrupt_window_bytes_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        UserWindow.unpack(b"\x01\x05")
    with pytest.raises(DecodeError, match="window format"):
        UserWindow.unpack(b"\x09" + UserWindow.empty().pack()[1:])


CLICK = RecordCodec(Click)


def make(**overrides: object) -> Click:
    c = {"event_id": "e", "user_id": "u", "session_id": None, "item_id": "i", "category_id": "c",
         "event_type": "view", "event_time_ms": NOW_MS, "price": None, "user_attributes": {}}
    c.update(overrides)
    return Click(**c)  # type: ignore[arg-type]


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"user_id": ""}, "missing user_id"),
    ({"event_id": " "}, "missing event_id"),
    ({"event_time_ms": 5}, "absurd event time 5"),
    ({"event_time_ms": NOW_MS + 2 * 86_400_000}, "absurd event time"),
    ({"category_id": "x" * 300}, "category_id longer than 256"),
    ({"user_attributes": {str(i): "v" for i in range(40)}}, "user_attributes too large"),
])
def test_check_click_gives_a_reason_for_bad_clicks(overrides: dict, reason: str) -> None:
    click, why = check_click(CLICK.encode(make(**overrides)), CLICK, NOW_MS)
    assert click is None and why is not None and why.startswith(reason)


def test_check_click_accepts_good_clicks_and_rejects_garbage() -> None:
    click, why = check_click(CLICK.encode(make()), CLICK, NOW_MS)
    assert why is None and click == make()
    click, why = check_click(b"\xff\xff\xff", CLICK, NOW_MS)
    assert click is None and why.startswith("undecodable")


def test_update_windows_snapshots_each_click_and_skips_redelivered_ones() -> None:
    store = {b"u": None}
    clicks = [make(event_id="a", category_id="x", event_time_ms=NOW_MS),
              make(event_id="b", category_id="y", event_time_ms=NOW_MS + 1),
              make(event_id="a", category_id="x", event_time_ms=NOW_MS),  # re-delivered
              make(event_id="c", user_id="v", category_id="z")]
    snapshots, windows = update_windows(clicks, store.get, max_events=50)
    # each click is predicted from its user's events up to and including it: the re-delivered one as at first
    assert [list(s.categories) for s in snapshots] == [["x"], ["x", "y"], ["x"], ["z"]]
    assert windows[b"u"].categories == ["x", "y"] and windows[b"v"].categories == ["z"]
    # a stored window is continued; a corrupt one is replaced by a fresh one
    store = {b"u": windows[b"u"].pack(), b"v": b"\x07garbage"}
    snapshots, windows = update_windows([make(event_id="d", category_id="w", event_time_ms=NOW_MS + 5),
                                         make(event_id="e", user_id="v")], store.get, max_events=50)
    assert list(snapshots[0].categories) == ["x", "y", "w"] and list(snapshots[1].categories) == ["c"]


def test_a_late_click_is_predicted_from_what_came_before_it() -> None:
    store = {b"u": None}
    clicks = [make(event_id="a", category_id="x", event_time_ms=NOW_MS),
              make(event_id="b", category_id="y", event_time_ms=NOW_MS + 10),
              make(event_id="c", category_id="z", event_time_ms=NOW_MS + 5),  # late: between a and b
              make(event_id="d", category_id="w", event_time_ms=NOW_MS - 10)]  # older than a full window
    snapshots, windows = update_windows(clicks, store.get, max_events=3)
    assert [list(s.categories) for s in snapshots] == [["x"], ["x", "y"], ["x", "z"], ["w"]]
    assert [list(s.times_ms) for s in snapshots][2:] == [[NOW_MS, NOW_MS + 5], [NOW_MS - 10]]
    assert windows[b"u"].categories == ["x", "z", "y"]  # the too-old click is not kept


def test_idle_windows_expire_by_event_time() -> None:
    def packed(newest_ms: int) -> bytes:
        w = UserWindow.empty()
        w.add("e", "c", "view", newest_ms, 50)
        return w.pack()

    day = 86_400_000
    items = [(b"active", packed(NOW_MS - day)), (b"idle", packed(NOW_MS - 8 * day)), (b"gone", None)]
    assert stale_keys(items, stream_time_ms=NOW_MS, ttl_ms=7 * day) == [b"idle"]


def test_a_window_packed_in_format_1_still_reads() -> None:
    # packed by the format-1 code (0x1f-joined ids): view, cart, purchase at +0 s, +30 s, +95 s
    old = bytes.fromhex("01030000ab6bec5f010000000000003075000018730100010305278d8d089ddc84910bec83e6000100"
                        "343735363130351f32353230333737")
    w = UserWindow.unpack(old)
    assert w.categories == ["4756105", "2520377", "4756105"]
    assert w.event_types == [1, 3, 5] and w.times_ms == [1_511_500_000_000, 1_511_500_030_000, 1_511_500_095_000]
    assert w.checksums == [143494439, 2441403549, 3867405323]
    assert UserWindow.unpack(w.pack()) == w  # written back in the current format


def test_category_ids_with_any_character_survive() -> None:
    w = UserWindow.empty()
    w.add("a", "c\x1f123", "view", NOW_MS, 50)
    w.add("b", "777", "cart", NOW_MS + 1, 50)
    w.add("c", "", "view", NOW_MS + 2, 50)
    assert UserWindow.unpack(w.pack()).categories == ["c\x1f123", "777", ""]
