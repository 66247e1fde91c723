"""The worker as users run it (`faust -A streams.app worker`) against the real broker."""
from __future__ import annotations

import dataclasses
import json
import random
import re
import signal
import time
from pathlib import Path

import pytest

from core.kafka import ensure_topics, send_all, topic_size
from core.records import Click
from core.settings import Settings
from schemas.codec import RecordCodec
from streams.batch import check_click
from tests.integration.conftest import read_all, sample_clicks
from tests.integration.worker import (
    as_tuple,
    changelog_windows,
    clicks_offsets,
    expected_windows,
    predictions_by_event,
    produce,
    worker_for,
)

CLICK = RecordCodec(Click)
pytestmark = pytest.mark.slow


# the inference engine in a thread of the worker's process, or in a child process (CLICKSTREAM_INFERENCE_PROCESS)
BOTH_MODES = pytest.mark.parametrize("inference_process", [False, True], ids=["engine-thread", "engine-process"])


def test_idle_users_windows_expire_from_the_table_and_its_changelog(settings: Settings, worker_model: Path,
                                                                   tmp_path: Path) -> None:
    """Users idle longer than the TTL in event time lose their window, in the changelog too (a worker that
    recovers the table does not bring it back); the others keep theirs."""
    s = dataclasses.replace(settings, window_ttl_s=3600, expiry_interval_s=1)
    now_ms = int(time.time() * 1000)
    tag = f"expiry-{s.app_id}"
    idle_users = {f"{tag}-idle{u}" for u in range(20)}
    active_users = {f"{tag}-active{u}" for u in range(20)}

    def click(user: str, i: int, minutes_ago: int) -> Click:
        return Click(f"{user}-{i}", user, "item", "c1", "view", now_ms - minutes_ago * 60_000)

    def newest_in_changelog() -> dict[str, bytes | None]:
        return {record.key.decode(): record.value for record in read_all(s, s.changelog_topic)}

    idle = [click(user, i, 300 - i) for user in sorted(idle_users) for i in range(3)]  # five hours ago
    active = [click(user, i, 10 - i) for user in sorted(active_users) for i in range(3)]
    worker = worker_for(s, worker_model, tmp_path / "state")
    try:
        worker.start()
        produce(s, idle + active)
        predictions_by_event(s, (c.event_id for c in idle + active))
        deadline = time.monotonic() + 60
        newest = newest_in_changelog()
        # a pass runs after a batch, one a second here: keep clicking until the idle windows are gone
        while {user for user, value in newest.items() if value is None} != idle_users:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            produce(s, [click(f"{tag}-active0", 100 + int(time.monotonic()), 0)])
            time.sleep(1)
            newest = newest_in_changelog()
    finally:
        worker.stop(signal.SIGTERM)
    assert {user for user, value in newest.items() if value is not None} == active_users
    assert re.search(r"idle windows: \d+ of \d+ expired", worker.log())


@BOTH_MODES
def test_clean_run_one_prediction_per_click(settings: Settings, worker_model: Path, tmp_path: Path,
                                            inference_process: bool) -> None:
    settings = dataclasses.replace(settings, inference_process=inference_process)
    clicks = sample_clicks(10_000, f"clean-{settings.app_id}")
    worker = worker_for(settings, worker_model, tmp_path / "state")
    try:
        worker.start()
        produce(settings, clicks[:9_000])
        produce(settings, clicks[9_000:], keyed=False)  # unkeyed clicks are re-keyed by user id
        found = predictions_by_event(settings, (c.event_id for c in clicks))
        time.sleep(3)  # anything duplicated would arrive by now
        found = predictions_by_event(settings, (c.event_id for c in clicks), timeout_s=60)
        deadline = time.monotonic() + 30  # commits every second: every handled click acknowledged by then
        while any((behind := {p: end - (done or 0) for p, (done, end) in clicks_offsets(settings).items()}).values()):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        worker.stop(signal.SIGTERM)
    assert not any(behind.values()), f"committed offsets behind the end of the clicks topic: {behind}"
    assert all(len(p) == 1 for p in found.values()), "a clean run predicts every click exactly once"
    assert len(found) == 10_000
    vocabulary = set(json.loads((worker_model / "manifest.json").read_text())["features"]["categories"])
    # the final ranking mixes in the stored baselines, whose categories are those of the training part
    stored = json.loads((worker_model / "baselines.json").read_text())
    vocabulary |= {c for c, _ in stored["popular"]}
    vocabulary |= {c for rows in (*stored["markov"].values(), *stored["neighbours"].values()) for c, _ in rows}
    user_categories: dict[str, set[str]] = {}
    for c in clicks:
        user_categories.setdefault(c.user_id, set()).add(c.category_id)
    for c in clicks[:500]:
        (p,) = found[c.event_id]
        assert p.user_id == c.user_id and p.event_time_ms == c.event_time_ms
        assert 1 <= p.window_length <= 50 and len(p.top_categories) == 10
        # categories come from the vocabulary or the training part, or are copied from the user's own window
        assert all(category in vocabulary | user_categories[c.user_id] for category, _ in p.top_categories)
        assert abs(sum(p.next_event_type.values()) - 1.0) < 1e-3
        assert p.timing is not None and p.timing.batch_size >= 1
    # the 1,000 unkeyed clicks went round once through the rekeyed topic, keyed by user id
    assert topic_size(settings, f"{settings.app_id}-clicks-rekeyed") == 1_000


@BOTH_MODES
def test_kill_9_and_restart_loses_nothing(settings: Settings, worker_model: Path, tmp_path: Path,
                                          inference_process: bool) -> None:
    """Every click predicted, and the windows in the changelog exactly those of all clicks (with the child
    process: its own newest windows used while their table writes are on the way, none applied twice)."""
    settings = dataclasses.replace(settings, inference_process=inference_process)
    clicks = sample_clicks(10_000, f"crash-{settings.app_id}")
    worker = worker_for(settings, worker_model, tmp_path / "state", "first")
    restarted = worker_for(settings, worker_model, tmp_path / "state", "second")
    try:
        worker.start()
        produce(settings, clicks)
        predictions_by_event(settings, (c.event_id for c in clicks[:2_000]))  # mid-stream
        worker.stop(signal.SIGKILL)
        restarted.start()
        found = predictions_by_event(settings, (c.event_id for c in clicks), workers=[restarted])
    finally:
        worker.stop(signal.SIGKILL)
        restarted.stop(signal.SIGTERM)
    assert set(found) >= {c.event_id for c in clicks}
    duplicates = sum(len(p) - 1 for p in found.values())
    print(f"duplicates after kill -9: {duplicates}")
    expected = expected_windows(clicks, 50)
    recovered = changelog_windows(settings)
    assert {u: as_tuple(w) for u, w in recovered.items()} == {u: as_tuple(w) for u, w in expected.items()}


def fuzzed(valid: list[dict], n: int, rng: random.Random) -> list[bytes]:
    """Messages that must all be refused: garbage, truncations, and well-formed clicks with bad content."""
    bad: list[bytes] = []
    while len(bad) < n:
        c = dataclasses.replace(rng.choice(valid), event_id=f"bad-{len(bad)}")
        kind = len(bad) % 6
        if kind == 0:
            data = rng.randbytes(rng.randint(0, 80))
        elif kind == 1:
            data = CLICK.encode(c)[: rng.randint(0, 10)]
        elif kind == 2:
            data = CLICK.encode(dataclasses.replace(c, user_id=""))
        elif kind == 3:
            data = CLICK.encode(dataclasses.replace(c, event_time_ms=rng.choice([0, 123, 4_102_444_800_000_000])))
        elif kind == 4:
            data = CLICK.encode(dataclasses.replace(c, item_id="x" * rng.randint(257, 5000)))
        else:
            data = CLICK.encode(c) + b"\x00trailing"
        if check_click(data, CLICK, int(time.time() * 1000))[0] is None:  # random bytes are rarely valid
            bad.append(data)
    return bad


def test_bad_input_goes_to_dead_letters_and_valid_clicks_are_all_predicted(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    rng = random.Random(11)
    clicks = sample_clicks(3_000, f"fuzz-{settings.app_id}")
    bad = fuzzed(clicks, 1_000, rng)
    messages = [(c.user_id.encode(), CLICK.encode(c), c.event_time_ms) for c in clicks]
    messages += [(b"fuzz", data, None) for data in bad]
    rng.shuffle(messages)
    worker = worker_for(settings, worker_model, tmp_path / "state")
    try:
        worker.start()
        ensure_topics(settings, [settings.clicks_topic])
        assert send_all(settings, settings.clicks_topic, messages).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in clicks))
        deadline = time.monotonic() + 60
        while len(dead := read_all(settings, settings.dead_letter_topic)) < 1_000 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        worker.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}
    assert sorted(r.value for r in dead) == sorted(bad)
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == settings.clicks_topic.encode() and int(headers["offset"]) >= 0
    assert {k for k, _ in dead[0].headers} == {"reason", "source_topic", "partition", "offset"}


def test_second_worker_takes_over_with_windows_from_the_changelog(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(8_000, f"pair-{settings.app_id}")
    first = worker_for(settings, worker_model, tmp_path / "a" / "state", "a")
    second = worker_for(settings, worker_model, tmp_path / "b" / "state", "b")
    try:
        first.start()
        second.start()
        produce(settings, clicks[:4_000])
        predictions_by_event(settings, (c.event_id for c in clicks[:4_000]))
        assert "clicks" in first.log() and "clicks" in second.log()
        first.stop(signal.SIGTERM)  # stopped mid-run: the survivor takes its partitions over
        produce(settings, clicks[4_000:])
        found = predictions_by_event(settings, (c.event_id for c in clicks), workers=[second])
    finally:
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGTERM)
    assert set(found) >= {c.event_id for c in clicks}
    # the survivor continued the first worker's users from their recovered windows
    expected = expected_windows(clicks, 50)
    recovered = changelog_windows(settings)
    assert {u: as_tuple(w) for u, w in recovered.items()} == {u: as_tuple(w) for u, w in expected.items()}


def test_explained_predictions_carry_the_events_that_drove_their_top_category(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    from core.events import EVENT_TYPES
    from streams.window import UserWindow

    clicks = sample_clicks(2_000, f"explain-{settings.app_id}")
    worker = worker_for(dataclasses.replace(settings, explain_predictions=True), worker_model, tmp_path / "state")
    try:
        worker.start()
        produce(settings, clicks)
        found = predictions_by_event(settings, (c.event_id for c in clicks))
    finally:
        worker.stop(signal.SIGTERM)
    windows: dict[str, UserWindow] = {}
    explained = 0
    for c in clicks:  # each click's window as the worker had it: the user's clicks up to it, newest 50
        stored = windows.setdefault(c.user_id, UserWindow.empty())
        stored.add(c.event_id, c.category_id, c.event_type, c.event_time_ms, 50)
        window = stored.model_window(stored.through(c.event_id))
        (p,) = found[c.event_id]
        top = p.top_categories[0][0]
        assert p.drivers is not None, "with explain_predictions every prediction carries its drivers"
        assert len(p.drivers) == min(3, window.categories.count(top))
        for d in p.drivers:
            assert (d.category_id, window.categories[d.position]) == (top, top)
            assert (d.event_type, d.event_time_ms) == (EVENT_TYPES[window.event_types[d.position]],
                                                       window.times_ms[d.position])
        assert [d.weight for d in p.drivers] == sorted((d.weight for d in p.drivers), reverse=True)
        explained += bool(p.drivers)
    assert explained > len(clicks) / 4, f"only {explained} of {len(clicks)} top categories were in the window"
