from __future__ import annotations

from pathlib import Path

import pytest

from cli.replay import (
    Checkpoint,
    ReplayCounters,
    in_event_time_order,
    merge_by_time,
    pacing,
    parse_speed,
)
from core.errors import ConfigError, InputError
from core.records import Click


def clicks(times: list[int]) -> list[Click]:
    return [Click(event_id=str(i), user_id="u", item_id="i", category_id="c", event_type="view", event_time_ms=t)
            for i, t in enumerate(times)]


def test_bounded_reordering_and_late_events() -> None:
    counters = ReplayCounters()
    out = [c.event_time_ms for c in in_event_time_order(clicks([3, 1, 2, 9, 4, 0]), counters, reorder_buffer=3)]
    # the buffer of 3 sorts local disorder; 0 arrives after 1 and 2 were sent: it goes out late
    assert out == [1, 2, 0, 3, 4, 9] and counters.late == 1
    counters = ReplayCounters()
    assert [c.event_time_ms for c in in_event_time_order(clicks([3, 1, 2]), counters)] == [1, 2, 3]
    assert counters.late == 0


def test_merge_of_several_logs_by_event_time() -> None:
    merged = merge_by_time([iter(clicks([1, 5, 9])), iter(clicks([2, 3, 10]))])
    assert [c.event_time_ms for c in merged] == [1, 2, 3, 5, 9, 10]


def test_speed_parsing_and_pacing_with_idle_gaps_cut() -> None:
    assert parse_speed("max") is None and parse_speed("60x") == 60.0 and parse_speed("1") == 1.0
    with pytest.raises(ConfigError):
        parse_speed("fast")
    due = pacing(60.0, max_idle_s=10.0)
    # 60x: a minute of event time is a second of wall time; a day-long gap is cut to 10 s
    assert [due(i, t) for i, t in enumerate([0, 60_000, 120_000, 120_000 + 86_400_000])] == [0.0, 1.0, 2.0, 12.0]


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    cp = Checkpoint(path, ["/a.csv"])
    assert cp.load() == 0
    cp.save(1234)
    assert Checkpoint(path, ["/a.csv"]).load() == 1234
    with pytest.raises(InputError, match="belongs to a replay of"):
        Checkpoint(path, ["/b.csv"]).load()
    path.write_text("{")
    with pytest.raises(InputError, match="corrupt"):
        cp.load()
