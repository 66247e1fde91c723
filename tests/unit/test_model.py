"""Tiny networks trained in seconds: learning, serving equivalence, artifact round trip, clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from model.baselines import StoredBaselines
from model.predictor import Predictor
from model.train import TrainConfig, train
from model.window import Window

CYCLE = [f"c{i}" for i in range(10)]
TINY = TrainConfig(window_length=8, lstm_units=16, epochs=8, patience=8, batch_size=128, learning_rate=1e-2,
                   min_category_count=1, seed=1)


def cycle_log(path: Path, users: int = 150, events: int = 40) -> Path:
    """Every user walks the categories c0 -> c1 -> ... -> c9 -> c0, from a random starting point."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(users):
        start = int(rng.integers(10))
        t0 = 1_511_000_000 + int(rng.integers(100_000))
        for k in range(events):
            behaviour = "buy" if k % 10 == 9 else "pv"
            rows.append((t0 + 30 * k, f"{u},{k},{CYCLE[(start + k) % 10]},{behaviour},{t0 + 30 * k}"))
    rows.sort()
    path.write_text("\n".join(r for _, r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    train([cycle_log(root / "cycle.csv")], "taobao", root / "artifact", TINY, verbose=0)
    return root / "artifact"


def windows_of(seqs: list[list[str]]) -> list[Window]:
    return [Window(s, np.ones(len(s), dtype=np.int8), 1_511_000_000_000 + 30_000 * np.arange(len(s)))
            for s in seqs]


@pytest.mark.slow
def test_tiny_network_learns_the_category_cycle(artifact: Path) -> None:
    predictor = Predictor(artifact, batch_sizes=(32,), lengths=(8,), top_k=3)
    rng = np.random.default_rng(5)
    seqs, truth = [], []
    for _ in range(200):
        start, n = int(rng.integers(10)), int(rng.integers(2, 9))
        seqs.append([CYCLE[(start + k) % 10] for k in range(n)])
        truth.append(CYCLE[(start + n) % 10])
    result = predictor.predict(windows_of(seqs))
    hits = np.mean([top[0][0] == t for top, t in zip(result.top_categories, truth)])
    assert hits > 0.9, f"top-1 accuracy {hits:.2f}; a random guess gets 0.10"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["training"]["train_examples"] > 0 and manifest["version"] == predictor.version
    assert (artifact / "loss_curve.png").stat().st_size > 0


@pytest.mark.slow
def test_a_shorter_recurrence_still_points_over_the_whole_window(tmp_path: Path) -> None:
    import dataclasses

    import keras

    # the LSTM reads the newest 3 events, the pointer all 8: the cycle is still learnt, and the saved
    # network reloads as a plain Keras model (its layers are registered, nothing is a lambda)
    config = dataclasses.replace(TINY, recurrent_steps=3)
    train([cycle_log(tmp_path / "cycle.csv")], "taobao", tmp_path / "short", config, verbose=0)
    predictor = Predictor(tmp_path / "short", batch_sizes=(16,), lengths=(8,), top_k=1)
    assert predictor.config.recurrent_steps == 3
    seqs = [[CYCLE[(s + k) % 10] for k in range(6)] for s in range(10)]
    result = predictor.predict(windows_of(seqs))
    assert [top[0][0] for top in result.top_categories] == [CYCLE[(s + 6) % 10] for s in range(10)]
    assert keras.saving.load_model(tmp_path / "short" / "model.keras").get_layer("recent_steps").count == 3


@pytest.mark.slow
def test_predictor_equals_the_keras_model_called_directly(artifact: Path) -> None:
    """The network part of the predictor's ranking is exactly the saved Keras model's mix of generator and
    pointer (the final ranking then mixes in the stored baselines, model.mix)."""
    import keras

    from model.features import encode_windows, window_index

    predictor = Predictor(artifact, batch_sizes=(4, 16), lengths=(4, 8), top_k=3, candidates=True)
    seqs = [["c1", "c2"], ["c5", "c6", "c7", "c8", "c9", "c0", "c1"], ["c3"], ["c4", "c4", "c5"], ["c9"] * 8,
            ["new", "c2", "new"]]  # "new" is out of vocabulary: it can only be copied, by its raw id
    result = predictor.predict(windows_of(seqs), candidates=True)
    # a predictor that ranks only what it shows (the network's top 3 when the mix is the network alone)
    # shows the same
    shown = Predictor(artifact, batch_sizes=(4, 16), lengths=(4, 8), top_k=3)
    assert shown.network_k == (3 if shown.network_only else predictor.network_k)
    assert [[c for c, _ in row] for row in shown.predict(windows_of(seqs)).top_categories] == \
        [[c for c, _ in row] for row in result.top_categories]
    with pytest.raises(ValueError, match="candidates=True"):
        shown.predict(windows_of(seqs), candidates=True)

    model = keras.saving.load_model(artifact / "model.keras")
    flat = np.concatenate([np.asarray(s, dtype=object) for s in seqs])
    lengths = np.array([len(s) for s in seqs])
    index = window_index(np.cumsum(lengths), np.cumsum(lengths) - lengths, 8)
    times = np.concatenate([w.times_ms for w in windows_of(seqs)])
    x = encode_windows(predictor.spec.category_index(flat), np.unique(flat, return_inverse=True)[1],
                       np.ones(len(flat), dtype=np.int8), times, index, predictor.spec)
    out = {k: np.asarray(v) for k, v in model([x["category"], x["event_type"], x["steps"]]).items()}
    names = predictor.spec.index_to_category
    for row in range(len(seqs)):
        g = out["gate"][row, 0]
        scores = dict(zip(names[2:], g * out["category_gen"][row, 2:]))  # padding and OOV are never shown
        for pos, p in zip(index[row], (1 - g) * out["attention"][row]):
            if pos >= 0:
                scores[flat[pos]] = scores.get(flat[pos], 0.0) + p
        best = sorted(scores.items(), key=lambda kv: -kv[1])[:3]
        network_top = result.network_top[row][:3]  # the network's own ranking, before the mix
        assert [c for c, _ in network_top] == [c for c, _ in best]
        np.testing.assert_allclose([s for _, s in network_top], [s for _, s in best],
                                   rtol=1e-4, atol=1e-6)
    assert scores["new"] > 0
    np.testing.assert_allclose(result.event_type_probs, out["event_type"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.purchase_head, out["purchase"][:, 0], rtol=1e-4, atol=1e-6)
    # the served probability: the purchase stage fit in training (model/purchase.py) over the head and the window
    stage = predictor.baselines.purchase
    assert stage is not None, "the artifact's validation slice has purchases: training fits a purchase stage"
    codes = np.where(index >= 0, np.unique(flat, return_inverse=True)[1][np.maximum(index, 0)], -1)
    np.testing.assert_allclose(result.purchase_probability,
                               stage(out["purchase"][:, 0], codes, x["event_type"], np.where(index >= 0, times[
                                   np.maximum(index, 0)], 0)), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_the_fused_serving_graph_computes_the_keras_network(artifact: Path) -> None:
    """model/serving.py folds the LSTM's input projection into the embeddings and loops the recurrence itself:
    every output must stay the network's, left padding included."""
    import keras

    from model.serving import fused_network

    network = keras.saving.load_model(artifact / "model.keras")
    rng = np.random.default_rng(3)
    batch, length = 6, 8
    category = rng.integers(1, network.get_layer("category_embedding").input_dim, (batch, length)).astype(np.int32)
    event_type = rng.integers(1, 6, (batch, length)).astype(np.int32)
    steps = rng.random((batch, length, 9)).astype(np.float32)
    for row, padding in enumerate((0, 1, 3, 7, 0, 5)):  # left padding of every width but a full one
        category[row, :padding] = event_type[row, :padding] = 0
        steps[row, :padding] = 0.0
    expected = network([category, event_type, steps], training=False)
    fused = fused_network(network)(category, event_type, steps)
    assert set(fused) == set(expected)
    for name in expected:
        np.testing.assert_allclose(np.asarray(fused[name]), np.asarray(expected[name]), rtol=1e-4, atol=1e-6)


def test_the_serving_graph_computes_the_step_features_of_training() -> None:
    """The predictor computes the step features in its compiled function (model.serving.step_features); they
    must be the ones training computes with NumPy (model.features.step_features), padding and repeats included."""
    from model.features import step_features as numpy_features
    from model.serving import step_features as graph_features
    from model.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(5)
    batch, length = 64, 12
    codes = rng.integers(0, 6, (batch, length)).astype(np.int32)  # few codes: many repeats
    event_type = rng.integers(1, 6, (batch, length)).astype(np.int32)
    gaps = rng.choice([0, 1, 999, 60_000, 7 * 86_400_000], (batch, length))  # same ms, seconds, days apart
    times = (1_700_000_000_000 + np.cumsum(gaps, axis=1)).astype(np.int64)
    for row in range(batch):  # left padding of every width
        padding = row % length
        codes[row, :padding], event_type[row, :padding], times[row, :padding] = -1, 0, 0
    expected = numpy_features(codes, event_type, times, 10.0)
    compiled = tf.function(lambda c, e, t: graph_features(c, e, t, 10.0), jit_compile=True)
    np.testing.assert_allclose(compiled(codes, event_type, times).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert expected[:, :, 6:].any() and (expected[:, :, 7] > np.log1p(1.5)).any()  # repeats were there


def test_windows_predicted_together_get_what_each_gets_alone(artifact: Path) -> None:
    """However a batch is split into calls and padded, each window's prediction is its own."""
    predictor = Predictor(artifact, batch_sizes=(2, 8), lengths=(4, 8), top_k=3)
    rng = np.random.default_rng(3)
    seqs = [[f"c{i}" for i in rng.integers(0, 10, rng.integers(1, 12))] for _ in range(37)]
    assert sum(len(s) > 4 for s in seqs) > 8  # more than one call per length
    together = predictor.predict(windows_of(seqs))
    alone = [predictor.predict(windows_of([s])) for s in seqs]
    assert [[c for c, _ in row] for row in together.top_categories] == \
        [[c for c, _ in a.top_categories[0]] for a in alone]
    np.testing.assert_allclose(together.purchase_probability, [a.purchase_probability[0] for a in alone],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(together.event_type_probs, np.concatenate([a.event_type_probs for a in alone]),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_predictor_warmed_on_one_shape_serves_the_same_predictions_at_once(artifact: Path) -> None:
    """The tensorflow runtime warms one shape before it serves and compiles the others beside the predictions."""
    seqs = [["c1", "c2"], ["c5", "c6", "c7", "c8", "c9", "c0", "c1"], ["c3"], ["new", "c2", "new"]]
    shapes = {"batch_sizes": (4, 16), "lengths": (4, 8), "top_k": 3, "runtime": "tensorflow"}
    full = Predictor(artifact, **shapes)
    lazy = Predictor(artifact, **shapes, warm="first")
    assert (full.shapes_warm, lazy.shapes_warm) == (4, 0)
    assert lazy.serving.shape_for(2, 3) == (16, 8)  # padded to the one usable shape, not compiled with XLA yet
    padded = lazy.predict(windows_of(seqs))
    assert lazy.warm_rest() > 0 and lazy.shapes_warm == 4 and lazy.serving.shape_for(2, 3) == (4, 4)
    for result in (padded, lazy.predict(windows_of(seqs))):
        expected = full.predict(windows_of(seqs))
        assert [[c for c, _ in row] for row in result.top_categories] == \
            [[c for c, _ in row] for row in expected.top_categories]
        np.testing.assert_allclose(result.purchase_probability, expected.purchase_probability, rtol=1e-4, atol=1e-6)


def test_artifact_moves_and_reloads_with_the_same_predictions(artifact: Path, tmp_path: Path) -> None:
    seqs = windows_of([["c1", "c2", "c3"], ["c7"], ["unseen", "unseen", "c2"]])
    empty = Window([], np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int64))
    first = Predictor(artifact, batch_sizes=(4,), lengths=(4,), top_k=5).predict([*seqs, empty])
    moved = shutil.copytree(artifact, tmp_path / "moved")
    second = Predictor(moved, batch_sizes=(8,), lengths=(8,), top_k=5).predict([*seqs, empty])
    for a, b in zip(first.top_categories, second.top_categories):
        assert [c for c, _ in a] == [c for c, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-5, atol=1e-7)
    # an empty window gets the popularity prior
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert first.top_categories[3] == [(c, p) for c, p in manifest["prior"]["categories"][:5]]
    assert first.window_lengths.tolist() == [3, 1, 3, 0]


@pytest.mark.slow
def test_evaluation_report_compares_the_model_with_the_baselines(artifact: Path, tmp_path: Path) -> None:
    from model.evaluate import evaluate

    metrics = evaluate(artifact, [artifact.parent / "cycle.csv"], "taobao", out=tmp_path, progress=False)
    category = metrics["next_category"]
    # in a cycle of 10 categories a window of 8 never holds the next one: copying cannot help, Markov can
    assert metrics["targets_in_window"] == 0.0
    assert category["repeat_last"]["hr@1"] == 0.0  # (its list is filled up with the popular categories)
    assert category["model"]["hr@1"] > 0.9 and category["markov"]["hr@1"] > 0.9
    others = [m["mrr@10"] for n, m in category.items() if n not in ("model", "network_alone", "markov",
                                                                      "last_then_markov", "item_knn")]
    assert category["model"]["mrr@10"] > max(others) + 0.5
    report = (tmp_path / "report.md").read_text()
    assert "| model |" in report and "0.0% of the events" in report
    assert json.loads((tmp_path / "metrics.json").read_text())["targets"] == metrics["targets"] > 0
    assert (tmp_path / "comparison.png").stat().st_size > 0


def test_missing_or_corrupt_artifacts_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"no model artifact at {tmp_path / 'nope'}"):
        Predictor(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    with pytest.raises(ModelError, match="manifest.json is missing"):
        Predictor(tmp_path / "bad")
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="manifest.json is corrupt"):
        Predictor(tmp_path / "bad")


@pytest.mark.slow
def test_corrupt_weights_are_detected(artifact: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(artifact, tmp_path / "broken")
    (broken / "model.keras").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="does not match its manifest"):
        Predictor(broken)


@pytest.mark.slow
def test_evaluate_never_fits_a_baseline_on_the_events_it_scores(artifact: Path, tmp_path: Path) -> None:
    from model.evaluate import evaluate

    # the cycle runs backwards in this log: c9 -> c8 -> ... A Markov chain fit on it would be right every time;
    # the stored one, fit on the training part of the forward cycle, ranks the forward successor first
    path = tmp_path / "backwards.csv"
    rows = []
    for u in range(30):
        for k in range(12):
            rows.append(f"{u},{k},{CYCLE[(u - k) % 10]},pv,{1_600_000_000 + 100 * u + k}")
    path.write_text("\n".join(rows) + "\n")
    stored = (artifact / "baselines.json").read_bytes()
    metrics = evaluate(artifact, [path], "taobao", split="none", out=tmp_path / "report", progress=False)
    category = metrics["next_category"]
    assert category["markov"]["hr@1"] == 0.0 and category["last_then_markov"]["hr@1"] == 0.0
    assert category["markov"]["hr@10"] == 1.0  # all 10 categories are ranked: the truth comes last
    windows = [[CYCLE[(u - k) % 10] for k in range(3)] for u in range(10)]

    forward = StoredBaselines.load(artifact)
    assert all(forward.markov_chain(w)[0] == CYCLE[(CYCLE.index(w[-1]) + 1) % 10] for w in windows)
    assert (artifact / "baselines.json").read_bytes() == stored  # evaluate read it, never rewrote it
    assert "stored baselines: events before the test slice" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_a_final_model_is_flagged_when_it_is_scored_on_its_own_test_slice(
        artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.evaluate import evaluate

    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["training"]["final"] is False  # the default: counts of the events before the test slice
    assert StoredBaselines.load(artifact).fitted_on.startswith("events before the test slice")
    final = shutil.copytree(artifact, tmp_path / "final")
    manifest["training"]["final"] = True
    (final / "manifest.json").write_text(json.dumps(manifest))
    log = artifact.parent / "cycle.csv"
    evaluate(final, [log], "taobao", split="time", progress=False)
    assert "trained with --final" in capsys.readouterr().err
    evaluate(final, [log], "taobao", split="none", progress=False)  # another log: nothing to warn about
    evaluate(artifact, [log], "taobao", split="time", progress=False)
    assert "--final" not in capsys.readouterr().err


def own_cycles_log(path: Path, users: int = 200, events: int = 24, period: int = 4) -> Path:
    """User u cycles through categories of its own, u<u>_0 .. u<u>_3; users come one after the other in time,
    so the users of the validation and test slices, and all their categories, are new to the training part."""
    rows = []
    for u in range(users):
        t0 = 1_600_000_000 + u * 3600
        rows += [f"{u},{k},u{u}_{k % period},pv,{t0 + 30 * k}" for k in range(events)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_the_model_points_at_categories_outside_the_vocabulary_where_markov_and_repeat_last_fail(
        tmp_path: Path) -> None:
    from model.evaluate import evaluate

    log = own_cycles_log(tmp_path / "own.csv")
    train([log], "taobao", tmp_path / "own", TINY, verbose=0)
    metrics = evaluate(tmp_path / "own", [log], "taobao", split="time", progress=False)
    category = metrics["next_category"]
    # every test category is out of the vocabulary; the next one is always 4 steps back in the window
    assert category["repeat_last"]["hr@1"] == 0.0 and category["markov"]["hr@5"] == 0.0
    assert category["model"]["hr@1"] > 0.8, category["model"]
    assert category["model"]["mrr@10"] > max(category["markov"]["mrr@10"], category["repeat_last"]["mrr@10"],
                                             category[metrics["best_category_baseline"]]["mrr@10"]) + 0.2


def test_network_ranks_count_vocabulary_and_out_of_vocabulary_competitors() -> None:
    from model.train import network_ranks

    outputs = {"gate": np.array([[0.5], [0.5]]),
               "category_gen": np.array([[0, 0.12, 0.5, 0.3, 0.08], [0, 0.9, 0.1, 0, 0]]),
               "attention": np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])}
    x = {"category": np.array([[4, 1, 1], [2, 1, 1]]), "raw_code": np.array([[7, 8, 8], [5, 9, 6]]),
         "target": np.array([3, 1]), "copy_match": np.array([[0, 0, 0], [0, 1, 0]], dtype=np.float32)}
    # row 0: scores 2: .25, 3: .15 (the truth), 4: .04 + .1 copied, OOV code 8: .15 + .25 -> 2 and 8 beat it
    # row 1: the truth is OOV code 9 with .15 copied; 2: .05 + .3 beats it, code 6 (.05) does not
    assert network_ranks(outputs, x).tolist() == [3, 2]


def test_category_codes_are_the_input_index_in_the_vocabulary_and_new_codes_outside_it() -> None:
    from model.features import OOV, CategoryCodes, FeatureSpec

    spec = FeatureSpec(categories=("a", "b", "c"))
    codes = CategoryCodes(spec)
    seen = np.fromiter(map(codes.__getitem__, ["b", "x", "a", "y", "x", "c"]), dtype=np.int64)
    assert seen.tolist() == [3, 5, 2, 6, 5, 4]  # in the vocabulary: index i + 2; others from 5 on, one per raw id
    assert codes.input_index(seen).tolist() == [3, OOV, 2, OOV, OOV, 4]
    assert np.array_equal(codes.input_index(seen), spec.category_index(["b", "x", "a", "y", "x", "c"]))
