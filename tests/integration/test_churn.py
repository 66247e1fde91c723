"""Churn: two workers of one app, one of them killed with kill -9 and started again every 20 s while clicks
arrive at a steady rate. Nothing is lost, no worker stalls, and the windows equal those of an uninterrupted run
(the long version, with figures: ``python -m benchmarks churn``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.churn import churn
from core.settings import Settings
from tests.integration.conftest import sample_clicks

pytestmark = pytest.mark.slow


def test_workers_killed_and_restarted_under_load_lose_nothing_and_never_stall(
        settings: Settings, worker_model: Path, tmp_path: Path) -> None:
    clicks = sample_clicks(4_000, f"churn-{settings.app_id}")
    outcome = churn(settings, worker_model, clicks, workers=2, rate=50, duration_s=80, kill_every_s=20,
                    root=tmp_path)
    print(outcome.summary())
    assert outcome.kills >= 3
    assert outcome.lost == 0, outcome.summary()
    assert outcome.exits.get(75, 0) == 0, f"a worker stalled: {outcome.summary()}"
    assert outcome.windows_equal, outcome.summary()
    assert len(outcome.recovery_s) == outcome.kills  # after every kill, every partition was predicted again
