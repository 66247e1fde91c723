"""How `clickstream demand` sums per-partition records: partitions add up, a complete record wins."""
from __future__ import annotations

import dataclasses

from cli.derived_commands import DemandBoard, demand_totals, render_demand
from core.derived_records import CategoryDemand

START = 1_700_000_040_000


def record(partition: int, category: str = "a", visits: float = 1.0, users: int = 1, complete: bool = True,
           start: int = START) -> CategoryDemand:
    return CategoryDemand(category_id=category, window_size_s=60, window_start_ms=start, expected_visits=visits,
                          distinct_users=users, expected_purchases=visits / 4, predictions=users,
                          partition=partition, partitions=2, complete=complete, closed_at_ms=0)


def test_partitions_add_up_and_a_complete_record_wins_over_a_repeat() -> None:
    records = [record(0, visits=2.0, users=2), record(1, visits=0.5, users=1), record(0, "b", 1.0, 1),
               record(1, visits=0.25, users=1, complete=False)]  # a restarted worker's repeat: ignored
    totals = demand_totals(records)
    a = totals[(60, START)]["a"]
    assert (a.expected_visits, a.distinct_users, a.expected_purchases, a.partitions, a.of, a.complete) == (
        2.5, 3, 0.625, 2, 2, True)
    b = totals[(60, START)]["b"]
    assert (b.partitions, b.of) == (1, 2)


def test_the_table_shows_the_newest_window_every_partition_reported() -> None:
    board = DemandBoard()
    for r in [record(0, "x", 5.0), record(1, "y", 7.0), record(0, "z", 9.0, start=START + 60_000)]:
        board.add(r)
    text = render_demand(board, 60, 10, 3)
    assert "2 of 2 partitions" in text and "INCOMPLETE" not in text
    lines = text.splitlines()
    assert lines[2].split()[0] == "y" and lines[3].split()[0] == "x"  # by expected visits
    board.add(dataclasses.replace(record(1, "z", 1.0, start=START + 60_000), complete=False))
    assert "INCOMPLETE" in render_demand(board, 60, 10, 4)
