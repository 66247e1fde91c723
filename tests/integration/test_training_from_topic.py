"""`clickstream train --from-topic` and `evaluate --from-topic` against the real broker: the clicks read back from
the topic are exactly the clicks produced to it, whatever the wire format, and a time
range reads only its part."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli.main import main as cli
from cli.topic_clicks import clicks_from_topic
from core.kafka import ensure_topics, send_all
from core.logs import ReadReport
from core.records import Click
from core.settings import Settings
from model.data import clean_events
from schemas.codec import RecordCodec
from tests.integration.conftest import sample_clicks


def produce(settings: Settings, clicks: list[Click], garbage: int) -> None:
    """Half the clicks as bare Avro, half in the single-object encoding, and ``garbage`` undecodable records."""
    bare, single = RecordCodec(Click), RecordCodec(Click, single_object=True)
    messages = [(c.key, (single if i % 2 else bare).encode(c), c.event_time_ms) for i, c in enumerate(clicks)]
    messages += [(b"nobody", b"\x00not avro at all", clicks[0].event_time_ms)] * garbage
    ensure_topics(settings, [settings.clicks_topic])
    result = send_all(settings, settings.clicks_topic, messages)
    assert result.failed == 0


def test_a_topic_reads_back_as_the_clicks_produced_to_it(settings: Settings) -> None:
    clicks = sample_clicks(20_000, "topic")
    produce(settings, clicks, garbage=3)
    from_file = clean_events(clicks)  # what training from a file of these clicks reads (model.data.load_events)
    report = ReadReport("topic")
    from_topic = clean_events(clicks_from_topic(settings, settings.clicks_topic, report, progress=False))
    assert report.rows == len(clicks) + 3 and report.bad == 3
    for column in ("user_ids", "category_ids", "event_types", "times_ms", "user_starts"):
        assert getattr(from_topic, column).tolist() == getattr(from_file, column).tolist(), column
    # a time range: the clicks with event time in [start, end), seeking by record timestamp
    times = sorted(c.event_time_ms for c in clicks)
    start, end = times[len(times) // 3], times[2 * len(times) // 3]
    part = clicks_from_topic(settings, settings.clicks_topic, ReadReport("part"), start_ms=start, end_ms=end,
                             progress=False)
    assert sorted(c.event_time_ms for c in part) == [t for t in times if start <= t < end]


def test_train_and_evaluate_from_a_topic(settings: Settings, tmp_path: Path) -> None:
    clicks = sample_clicks(20_000, "train-topic")
    produce(settings, clicks, garbage=0)
    runner = CliRunner()
    model = tmp_path / "model"
    args = ["--broker", settings.broker, "--from-topic", settings.clicks_topic]
    result = runner.invoke(cli, ["train", *args, "--out", str(model), "--units", "16", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["training"]["logs"] == [f"kafka:{settings.clicks_topic} [beginning, end)"]
    assert manifest["training"]["events"] > 0.99 * len(clicks)
    result = runner.invoke(cli, ["evaluate", *args, "--model", str(model), "--max-events", "2000"])
    assert result.exit_code == 0, result.output
    assert "## Next category" in result.output
    # one clear line for what cannot be read
    result = runner.invoke(cli, ["train", *args, "--since", "1h", "--out", str(tmp_path / "none")])
    assert result.exit_code != 0 and "no records in that time range" in result.output
    result = runner.invoke(cli, ["train", "--broker", settings.broker, "--from-topic", "no-such-topic",
                                 "--out", str(tmp_path / "none")])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_promote_swaps_the_serving_link_only_for_a_candidate_that_is_not_worse(settings: Settings,
                                                                                tmp_path: Path) -> None:
    """Two candidates trained from the topic's older clicks, judged on its newer ones: the real one is promoted
    (the link swapped, the decision recorded), one whose ranking is Markov alone is refused (exit 7)."""
    import dataclasses
    import os
    import shutil

    from core.kafka import read_to_end
    from model.artifact import read_manifest, weights_digest, write_manifest
    from model.baselines import StoredBaselines

    clicks = sample_clicks(30_000, "promote")
    produce(settings, clicks, garbage=0)
    times = sorted(c.event_time_ms for c in clicks)
    cut = times[int(len(times) * 0.8)]
    runner = CliRunner()
    source = ["--broker", settings.broker, "--from-topic", settings.clicks_topic]
    for name in ("first", "second"):
        result = runner.invoke(cli, ["train", *source, "--until", str(cut), "--out", str(tmp_path / name),
                                     "--units", "16", "--epochs", "1", "--seed", "1" if name == "first" else "2"])
        assert result.exit_code == 0, result.output
    markov = Path(shutil.copytree(tmp_path / "second", tmp_path / "markov"))
    baselines = StoredBaselines.load(markov)
    manifest = read_manifest(markov)
    manifest["baselines_sha256"] = weights_digest(dataclasses.replace(baselines, mix={"markov": 1.0}).save(markov))
    write_manifest(markov, manifest)
    link = tmp_path / "serving"
    link.symlink_to(tmp_path / "first")
    newer = [*source, "--from-time", str(cut)]
    models_topic = f"models-{settings.app_id}"
    result = runner.invoke(cli, ["promote", str(markov), *newer, "--serving", str(link), "--models-topic", models_topic])
    assert result.exit_code == 7, result.output
    assert os.path.realpath(link) == str(tmp_path / "first")
    result = runner.invoke(cli, ["promote", str(tmp_path / "second"), *newer, "--serving", str(link),
                                 "--models-topic", models_topic])
    assert result.exit_code == 0, result.output
    assert os.path.realpath(link) == str(tmp_path / "second")
    decisions = [json.loads(r.value) for r in read_to_end(settings, models_topic)]
    assert [d["decision"] for d in decisions] == ["refused", "promoted"]
    assert decisions[1]["versions"]["candidate"] == read_manifest(tmp_path / "second")["version"]
    assert all(r.key == b"serving" for r in read_to_end(settings, models_topic))
    # events the candidate was trained on are no fair judge
    result = runner.invoke(cli, ["promote", str(tmp_path / "second"), *source, "--serving", str(link)])
    assert result.exit_code == 3 and "not after the candidate's training data" in result.output
