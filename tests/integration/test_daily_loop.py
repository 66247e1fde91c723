"""The daily loop a shop runs (README, "Keeping the model fresh"), on a 7-day replay of the Taobao sample (or
synthetic shoppers spread over 7 days without it), against the real broker: the week is replayed to the clicks
topic, a model trained from the topic's first days serves; the next model is trained from the topic up to the
last day, judged against the serving one on the last day, promoted, and the running worker serves it without a
restart."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main as cli
from core.records import Click
from core.settings import Settings
from tests.integration.conftest import consume_until
from tests.integration.worker import PREDICTION, produce, worker_for

pytestmark = pytest.mark.slow
DAY_MS = 86_400_000
WEEK_START_MS = 1_511_568_000_000  # 2017-11-25 00:00 UTC: the sample's first full day


def week_of_clicks(log: Path) -> int:
    """Write 7 days of clicks as a Taobao log: a third of the sample's users (all of their events in the week), or
    synthetic shoppers spread over the week. Returns the number of clicks."""
    from core.logs import read_log
    from core.synthetic import synthetic_clicks
    from tests.conftest import data_dir

    root = data_dir()
    sample = root / "taobao" / "UserBehavior-sample.csv" if root else None
    if sample is not None and sample.is_file():
        clicks = [c for c in read_log(sample, "taobao", id_prefix="week")
                  if WEEK_START_MS <= c.event_time_ms < WEEK_START_MS + 7 * DAY_MS and int(c.user_id) % 3 == 0]
    else:
        made = list(synthetic_clicks(2_000, 40_000, seed=11, id_prefix="week", start_ms=WEEK_START_MS))
        first, last = made[0].event_time_ms, made[-1].event_time_ms
        clicks = [dataclasses.replace(c, event_time_ms=WEEK_START_MS + (c.event_time_ms - first) * (7 * DAY_MS - 1)
                                      // max(1, last - first)) for c in made]
    with open(log, "w") as f:
        for c in clicks:
            behaviour = {"view": "pv", "purchase": "buy"}.get(c.event_type, c.event_type)
            f.write(f"{c.user_id},{c.item_id},{c.category_id},{behaviour},{c.event_time_ms // 1000}\n")
    return len(clicks)


def test_a_week_replayed_trained_from_the_topic_promoted_and_served_without_a_restart(
        settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "week.csv"
    assert week_of_clicks(log) > 10_000
    runner = CliRunner()
    env = settings.to_env()
    small = ["--units", "16", "--epochs", "1"]

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == 0, f"clickstream {' '.join(args)}: {result.output}"
        return result.output

    def version(model: Path) -> str:
        return str(json.loads((model / "manifest.json").read_text())["version"])

    run("replay", str(log), "--format", "taobao", "--speed", "max", "--quiet")
    day = [time.strftime("%Y-%m-%dT%H:%M", time.gmtime((WEEK_START_MS + d * DAY_MS) / 1000)) for d in range(8)]
    # the model serving at the start: trained on the week's first four days
    run("train", "--from-topic", settings.clicks_topic, "--until", day[4], "--out", str(tmp_path / "day4"), *small)
    link = tmp_path / "serving"
    link.symlink_to(tmp_path / "day4")
    worker = worker_for(dataclasses.replace(settings, model_poll_s=1), link, tmp_path / "state")
    try:
        worker.start()
        pid = worker.pid
        # the nightly job: train on the week up to its last day, judge on the last day, promote
        run("train", "--from-topic", settings.clicks_topic, "--from-time", day[0], "--until", day[6],
            "--out", str(tmp_path / "day6"), *small)
        output = run("promote", str(tmp_path / "day6"), "--from-topic", settings.clicks_topic, "--from-time", day[6],
                     "--serving", str(link), "--models-topic", f"models-{settings.app_id}")
        assert "promoted" in output and os.path.realpath(link) == str(tmp_path / "day6")
        # the worker picks the new model up and serves it, in the same process
        new = version(tmp_path / "day6")
        now_ms = int(time.time() * 1000)
        deadline = time.monotonic() + 180
        served = False
        while not served:
            assert time.monotonic() < deadline, f"model {new} never served:\n{worker.log()[-3000:]}"
            fresh = [Click(f"fresh-{now_ms}-{i}", f"fresh-user-{i % 7}", "item", "c1", "view", now_ms + i)
                     for i in range(20)]
            produce(settings, fresh)
            wanted = {c.event_id for c in fresh}
            versions: dict[str, str] = {}

            def take(record: object, wanted: set[str] = wanted, versions: dict[str, str] = versions) -> bool:
                p = PREDICTION.decode(record.value)  # type: ignore[attr-defined]
                if p.event_id in wanted:
                    versions[p.event_id] = p.model_version
                return wanted <= versions.keys()

            consume_until(settings, settings.predictions_topic, take, 120)
            served = set(versions.values()) == {new}
            now_ms += 1000
        assert worker.process is not None and worker.process.poll() is None and worker.pid == pid
        assert f"switched from model {version(tmp_path / 'day4')} to {new}" in worker.log()
    finally:
        worker.stop(signal.SIGTERM)
