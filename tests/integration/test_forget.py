"""Forgetting a shopper end to end (`clickstream forget`, core/privacy.py) on the real broker: the worker deletes
the user's window and audience state, tombstones both changelogs, records the user on the forgotten-users topic,
drops the user's later clicks; nothing of the user is left in RocksDB, nor in a worker rebuilt from the
changelogs; a readmitted user starts a new history."""
from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.worker_process import WorkerProcess, worker_env
from cli.main import main
from core.privacy import read_forgotten
from core.records import Click
from core.settings import Settings
from tests.integration.conftest import read_all, sample_clicks
from tests.integration.test_operations import free_port, get, scrape, wait_ready
from tests.integration.worker import PREDICTION, TEST_SHAPES, predictions_by_event, produce

pytestmark = pytest.mark.slow


def stored_keys(state_dir: Path) -> dict[str, set[bytes]]:
    """The keys of each table of a stopped worker's state folder, read from its RocksDB stores."""
    from rocksdict import AccessType, Rdict

    keys: dict[str, set[bytes]] = {}
    for path in sorted(state_dir.rglob("*.db")):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            keys.setdefault(path.name.rsplit("-", 1)[0], set()).update(
                k for k in db.keys() if isinstance(k, bytes) and not k.startswith(b"__faust"))  # Faust's offset
        finally:
            db.close()
    return keys


def web_worker(s: Settings, model: Path, folder: Path) -> tuple[WorkerProcess, int]:
    """A worker (not started yet) with its state and log in ``folder`` and its web server on a free port."""
    port = free_port()
    return WorkerProcess(worker_env(s, model, folder / "state"), folder / "worker.log", web_port=port), port


def test_a_forgotten_user_leaves_nothing_behind_and_a_readmitted_one_starts_anew(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    # every prediction enters its user into an audience: every user has an audience state to delete
    s = dataclasses.replace(settings, **TEST_SHAPES, audience_threshold=0.0, audience_rearm_threshold=0.0)
    env = s.to_env()
    clicks = sample_clicks(2_000, f"forget-{s.app_id}")
    users = list(dict.fromkeys(c.user_id for c in clicks))
    gone, kept = users[0], users[1]
    worker, port = web_worker(s, worker_model, tmp_path / "a")
    try:
        worker.start()
        wait_ready(port)
        produce(s, clicks)
        predictions_by_event(s, (c.event_id for c in clicks), workers=[worker])
        assert get(f"http://127.0.0.1:{port}/users/{gone}/intent")[0] == 200
        audiences = {r.key for r in read_all(s, f"{s.app_id}-user_to_audience-changelog")}
        assert gone.encode() in audiences

        result = CliRunner().invoke(main, ["forget", gone, "--wait-s", "60"], env=env)
        assert result.exit_code == 0, result.output
        assert "forget confirmed for 1 users" in result.output
        assert get(f"http://127.0.0.1:{port}/users/{gone}/intent")[0] == 404
        assert get(f"http://127.0.0.1:{port}/users/{kept}/intent")[0] == 200
        for changelog in (s.changelog_topic, f"{s.app_id}-user_to_audience-changelog"):
            newest = {r.key: r.value for r in read_all(s, changelog)}  # what compaction keeps
            assert newest[gone.encode()] is None, f"{changelog}: no tombstone for {gone}"
            assert newest[kept.encode()] is not None
        assert set(read_forgotten(s)) == {gone.encode()}

        # the forgotten user's later clicks are dropped; the other user's are predicted
        now_ms = int(time.time() * 1000)
        later = [Click(f"later-{s.app_id}-{user}-{i}", user, "item", "c1", "view", now_ms + i)
                 for i in range(5) for user in (gone, kept)]
        produce(s, later)
        predictions_by_event(s, (c.event_id for c in later if c.user_id == kept), workers=[worker])
        time.sleep(2)  # a batch's predictions go out together: the later clicks of gone were handled by now
        predicted = {PREDICTION.decode(r.value).event_id for r in read_all(s, s.predictions_topic)}
        assert not predicted & {c.event_id for c in later if c.user_id == gone}
        assert scrape(port)["clickstream_dropped_forgotten_clicks_total"] == 5
        assert get(f"http://127.0.0.1:{port}/users/{gone}/intent")[0] == 404
    finally:
        worker.stop(signal.SIGTERM)
    # nothing of the user in any RocksDB store but the record that it is forgotten
    tables = stored_keys(tmp_path / "a" / "state")
    assert set(tables) == {"user_to_window", "user_to_audience", "user_forgotten"}, tables.keys()
    assert kept.encode() in tables["user_to_window"] and tables["user_forgotten"] == {gone.encode()}
    assert gone.encode() not in tables["user_to_window"] | tables["user_to_audience"]

    # a worker rebuilt from the changelogs has nothing of the user; readmitted, the user starts a new history
    worker, port = web_worker(s, worker_model, tmp_path / "b")
    try:
        worker.start()
        wait_ready(port)
        assert get(f"http://127.0.0.1:{port}/users/{gone}/intent")[0] == 404
        assert get(f"http://127.0.0.1:{port}/users/{kept}/intent")[0] == 200
        result = CliRunner().invoke(main, ["forget", "--readmit", gone, "--wait-s", "60"], env=env)
        assert result.exit_code == 0 and "readmission confirmed" in result.output, result.output
        old = Click(f"old-{s.app_id}", gone, "item", "c1", "view", now_ms)  # from before the readmission
        anew = [Click(f"anew-{s.app_id}-{i}", gone, "item", "c2", "view", int(time.time() * 1000) + 1000 + i)
                for i in range(3)]
        produce(s, [old, *anew])
        found = predictions_by_event(s, (c.event_id for c in anew), workers=[worker])
        assert [found[c.event_id][0].window_length for c in anew] == [1, 2, 3]  # nothing of the old history
        answer = json.loads(get(f"http://127.0.0.1:{port}/users/{gone}/intent")[1])
        assert answer["window_length"] == 3
    finally:
        worker.stop(signal.SIGTERM)



def test_with_pseudonymous_ids_nothing_the_worker_writes_holds_a_raw_id(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    from core.derived_records import AudienceEntry
    from schemas.codec import RecordCodec

    s = dataclasses.replace(settings, **TEST_SHAPES, user_id_key="a-test-secret", audience_threshold=0.0,
                            audience_rearm_threshold=0.0)
    ids = s.user_ids()
    clicks = sample_clicks(1_000, f"pseudonyms-{s.app_id}")
    raw = {c.user_id for c in clicks}
    worker, port = web_worker(s, worker_model, tmp_path)
    try:
        worker.start()
        wait_ready(port)
        produce(s, clicks)  # keyed and named by the raw ids, as a shop front sends them
        found = predictions_by_event(s, (c.event_id for c in clicks), workers=[worker])
        assert all(p.user_id == ids.key_of(c.user_id) for c in clicks for p in found[c.event_id])
        entries = [RecordCodec(AudienceEntry).decode(r.value) for r in read_all(s, s.audiences_topic)]
        assert entries and not {e.user_id for e in entries} & raw
        for topic in (s.predictions_topic, s.audiences_topic, s.changelog_topic,
                      f"{s.app_id}-user_to_audience-changelog"):
            keys = {r.key.decode() for r in read_all(s, topic) if r.key is not None}
            assert keys and not keys & raw and all(k.startswith("p1:") for k in keys), topic
        # asked by the raw id, the worker answers for the pseudonym; forgotten by the raw id, it forgets the pseudonym
        user = clicks[0].user_id
        status, body = get(f"http://127.0.0.1:{port}/users/{user}/intent")
        assert status == 200 and json.loads(body)["user_id"] == ids.key_of(user)
        result = CliRunner().invoke(main, ["forget", user, "--wait-s", "60"], env=s.to_env())
        assert result.exit_code == 0 and "forget confirmed" in result.output, result.output
        assert set(read_forgotten(s)) == {ids.key_of(user).encode()}
        assert get(f"http://127.0.0.1:{port}/users/{user}/intent")[0] == 404
    finally:
        worker.stop(signal.SIGTERM)
