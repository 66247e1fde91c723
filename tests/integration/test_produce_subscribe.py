from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from click.testing import CliRunner

from cli.main import main
from core.kafka import ensure_topics, send_all, topic_size
from core.records import Click, Prediction
from core.settings import Settings
from core.synthetic import synthetic_clicks
from schemas.codec import RecordCodec
from tests.integration.conftest import consume

CLICK = RecordCodec(Click)


def cli_env(s: Settings) -> dict[str, str]:
    return {"CLICKSTREAM_BROKER": s.broker, "CLICKSTREAM_CLICKS_TOPIC": s.clicks_topic,
            "CLICKSTREAM_PREDICTIONS_TOPIC": s.predictions_topic, "CLICKSTREAM_DEAD_LETTER_TOPIC": s.dead_letter_topic}


def test_10k_synthetic_clicks_are_read_back_field_for_field(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["produce", "--synthetic", "--users", "300", "--events", "10000",
                                       "--seed", "3", "-q"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    expected = {c.event_id: c for c in synthetic_clicks(300, 10_000, seed=3)}
    records = consume(settings, settings.clicks_topic, 10_000)
    assert len(records) == 10_000
    got = {}
    partitions_of_user: dict[str, set[int]] = {}
    for r in records:
        click = CLICK.decode(r.value)
        assert r.key == click.user_id.encode()
        assert r.timestamp == click.event_time_ms
        partitions_of_user.setdefault(click.user_id, set()).add(r.partition)
        got[click.event_id] = click
    # the generator's start time follows the clock, so compare everything else exactly
    for event_id, click in got.items():
        assert dataclasses.replace(click, event_time_ms=0) == dataclasses.replace(expected[event_id], event_time_ms=0)
    assert set(got) == set(expected)
    assert all(len(p) == 1 for p in partitions_of_user.values()), "a user's clicks must share a partition"
    assert len({p for ps in partitions_of_user.values() for p in ps}) == 4


def test_taobao_sample_is_produced_with_counts_reported(settings: Settings, taobao_sample: Path) -> None:
    result = CliRunner().invoke(main, ["produce", str(taobao_sample), "--format", "taobao", "-q"],
                                env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert "195269 rows, 195269 clicks, 0 bad rows skipped" in result.output
    assert topic_size(settings, settings.clicks_topic) == 195_269


def test_bad_rows_are_reported_and_strict_fails(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("1,2,3,pv,1511544070\n1,2,3,oops,1511544071\n1,2,3,buy,1511544072\n")
    result = CliRunner().invoke(main, ["produce", str(log), "-q"], env=cli_env(settings))
    assert result.exit_code == 0
    assert "3 rows, 2 clicks, 1 bad rows skipped (line 2: unknown behaviour 'oops')" in result.output
    strict = CliRunner().invoke(main, ["produce", str(log), "--strict", "-q"], env=cli_env(settings))
    assert strict.exit_code == 3
    assert "line 2: unknown behaviour 'oops'" in strict.output


def prediction(user: str, i: int) -> Prediction:
    return Prediction(event_id=f"e{i}", user_id=user, event_time_ms=1000 + i, predicted_at_ms=2000 + i,
                      model_version="test", top_categories=(("42", 0.5),),
                      next_event_type={"view": 0.75, "cart": 0.25}, purchase_probability=0.125, window_length=i)


def test_subscribe_filters_by_user_and_stops_at_max(settings: Settings) -> None:
    codec = RecordCodec(Prediction)
    ensure_topics(settings, [settings.predictions_topic])
    messages = [(p.user_id.encode(), codec.encode(p), None)
                for i in range(30) for p in [prediction("alice" if i % 3 == 0 else "bob", i)]]
    stats = send_all(settings, settings.predictions_topic, messages)
    assert stats.sent == 30 and stats.failed == 0
    start = time.monotonic()
    result = CliRunner().invoke(main, ["subscribe", "--from-beginning", "--user", "alice", "--max", "5",
                                       "--timeout-s", "30"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == 5 and time.monotonic() - start < 30
    assert {p["user_id"] for p in lines} == {"alice"}
    assert sorted(p["event_id"] for p in lines) == sorted(f"e{i}" for i in range(0, 15, 3))
    assert lines[0]["next_event_type"] == {"view": 0.75, "cart": 0.25}

    table = CliRunner().invoke(main, ["subscribe", "--from-beginning", "--table", "--max", "30",
                                      "--timeout-s", "30"], env=cli_env(settings))
    assert table.exit_code == 0, table.output
    assert "30 predictions, 2 users" in table.output and "42(0.50)" in table.output
