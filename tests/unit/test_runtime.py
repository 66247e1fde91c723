"""The NumPy serving runtime against the Keras network it was exported from, on real windows of the three
shared logs (and on a synthetic log where they are absent), every window length from 1 to N.

Tolerance: 2e-5 absolute on every probability (float32 arithmetic in a different order), 5e-5 for the
Transformer (two layer norms and a softmax per block, on purposely inflated weights); top-k lists equal.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ModelError
from model.config import NetworkConfig
from model.export import SERVING, serving_weights
from model.features import FeatureSpec, encode_windows, window_index
from model.runtime import NumpyNetwork
from tests.conftest import REPO, data_dir
from tests.unit.test_model import artifact, windows_of  # noqa: F401  (the tiny trained artifact fixture)

ATOL = 2e-5
TRANSFORMER_ATOL = 5e-5
N = 20
LOGS = {"taobao": ("taobao/UserBehavior-sample.csv", "taobao", None),
        "rees46": ("rees46/2019-Oct-Nov-head.csv", "rees46", None),
        "diginetica": ("diginetica/train-item-views-sample.csv", "generic", "diginetica.yaml")}


def real_windows(name: str, count: int = 300) -> tuple[FeatureSpec, dict[str, np.ndarray]]:
    """Model inputs of ``count`` windows ending at random events of a shared log, of every length 1..N."""
    from model.data import load_events, user_start_of

    root = data_dir()
    relative, fmt, mapping = LOGS[name]
    if root is None or not (root / relative).is_file():
        pytest.skip(f"{name} sample not found: set CLICKSTREAM_DATA_DIR to the folder holding {relative}")
    log, _ = load_events([root / relative], fmt, str(REPO / "model" / "mappings" / mapping) if mapping else None)
    spec = FeatureSpec.fit(log.category_ids[: len(log) // 2].tolist(), min_count=2)  # later categories: OOV
    user_start = user_start_of(log)
    rng = np.random.default_rng(0)
    ends = rng.choice(np.arange(1, len(log) + 1), count, replace=False)
    starts = np.maximum(user_start[ends - 1], ends - 1 - rng.integers(0, N, count))  # lengths 1..N
    codes = np.unique(log.category_ids, return_inverse=True)[1]
    return spec, encode_windows(spec.category_index(log.category_ids), codes, log.event_types, log.times_ms,
                                window_index(ends, starts, N), spec)


def assert_same_outputs(network, inputs: dict[str, np.ndarray], config: NetworkConfig) -> None:
    expected = {k: np.asarray(v) for k, v in
                network([inputs["category"], inputs["event_type"], inputs["steps"]], training=False).items()}
    got = NumpyNetwork(serving_weights(network), config)(inputs["category"], inputs["event_type"], inputs["steps"])
    assert set(got) == set(expected)
    for name in expected:
        atol = TRANSFORMER_ATOL if config.arch == "transformer" else ATOL
        np.testing.assert_allclose(got[name], expected[name], atol=atol, rtol=0, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("log_name", sorted(LOGS))
@pytest.mark.parametrize("shape", [{}, {"lstm_layers": 2}, {"recurrent_steps": 8}, {"arch": "gru", "lstm_layers": 2},
                                   {"arch": "transformer", "lstm_layers": 2},
                                   {"arch": "transformer", "recurrent_steps": 8}],
                         ids=["default", "2-layers", "short-recurrence", "gru", "transformer", "short-transformer"])
def test_numpy_network_equals_the_keras_network_on_real_windows(log_name: str, shape: dict[str, int | str]) -> None:
    import keras

    from model.network import build_network

    spec, inputs = real_windows(log_name)
    assert len({int((row > 0).sum()) for row in inputs["event_type"]}) > N // 2  # many window lengths
    config = NetworkConfig(n_categories=spec.n_categories, n_event_types=len(spec.event_types) + 1,
                           window_length=N, lstm_units=32, lstm_layers=shape.get("lstm_layers", 1), dropout=0.0,
                           purchase_horizon=5, recurrent_steps=shape.get("recurrent_steps", 0),
                           arch=str(shape.get("arch", "lstm")))
    keras.utils.set_random_seed(1)
    network = build_network(config)
    for weight in network.weights:  # larger than the initial weights, so that every non-linearity is exercised
        weight.assign(np.asarray(weight) * 3.0 + np.random.default_rng(2).normal(0, 0.05, weight.shape))
    assert_same_outputs(network, inputs, config)


@pytest.mark.slow
def test_both_runtimes_serve_the_same_predictions(artifact: Path) -> None:  # noqa: F811
    from model.predictor import Predictor

    rng = np.random.default_rng(4)
    seqs = [[f"c{i}" for i in rng.integers(0, 10, rng.integers(1, 12))] + ["unseen"] * int(rng.integers(0, 2))
            for _ in range(60)]
    numpy_side = Predictor(artifact, top_k=5, drivers=2).predict(windows_of(seqs))
    tf_side = Predictor(artifact, top_k=5, drivers=2, runtime="tensorflow", batch_sizes=(64,), lengths=(8,),
                        jit_compile=False).predict(windows_of(seqs))
    for a, b in zip(numpy_side.top_categories, tf_side.top_categories):
        assert [c for c, _ in a] == [c for c, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=ATOL)
    np.testing.assert_allclose(numpy_side.event_type_probs, tf_side.event_type_probs, atol=ATOL)
    np.testing.assert_allclose(numpy_side.purchase_probability, tf_side.purchase_probability, atol=ATOL)
    assert numpy_side.drivers is not None and tf_side.drivers is not None
    for a, b in zip(numpy_side.drivers, tf_side.drivers):
        assert [dataclasses.replace(d, weight=0) for d in a] == [dataclasses.replace(d, weight=0) for d in b]
        np.testing.assert_allclose([d.weight for d in a], [d.weight for d in b], atol=ATOL)


def test_the_numpy_runtime_never_imports_tensorflow(artifact: Path) -> None:  # noqa: F811
    code = ("import sys; from model.predictor import Predictor; from model.window import Window; import numpy as np;"
            f"p = Predictor({str(artifact)!r});"
            "p.predict([Window(['c1', 'c2'], np.ones(2, dtype=np.int8), np.arange(2) * 1000)]);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_missing_or_broken_serving_file_is_one_clear_error(artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    from model.predictor import Predictor

    broken = shutil.copytree(artifact, tmp_path / "broken")
    (broken / SERVING).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="serving.npz does not match its manifest"):
        Predictor(broken)
    old = shutil.copytree(artifact, tmp_path / "old")
    (old / SERVING).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["serving_sha256"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=f"serving.npz is missing: export it .*clickstream export {old}"):
        Predictor(old)
    from model.export import export_artifact

    export_artifact(old)  # what `clickstream export` runs
    assert Predictor(old).predict(windows_of([["c1", "c2"]])).top_categories[0]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_every_architecture_saves_loads_and_is_causal(arch: str, tmp_path: Path) -> None:
    """The artifact's model.keras of each architecture loads back to the same network, and a step's state
    depends on that step and the earlier ones only: changing the newest event leaves the pointer's scores of
    the earlier steps' keys alone, so only the newest step's share of the attention moves them."""
    import keras

    from model.network import build_network

    config = NetworkConfig(n_categories=40, n_event_types=6, window_length=12, lstm_units=16, lstm_layers=2,
                           dropout=0.0, purchase_horizon=5, recurrent_steps=0, arch=arch)
    keras.utils.set_random_seed(3)
    network = build_network(config)
    rng = np.random.default_rng(5)
    category = rng.integers(2, 40, (4, 12)).astype(np.int32)
    event_type = rng.integers(1, 6, (4, 12)).astype(np.int32)
    event_type[0, :5] = category[0, :5] = 0  # a left-padded window
    steps = rng.normal(size=(4, 12, 9)).astype(np.float32)
    steps[0, :5] = 0
    out = {k: np.asarray(v) for k, v in network([category, event_type, steps], training=False).items()}
    network.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    again = {k: np.asarray(v) for k, v in loaded([category, event_type, steps], training=False).items()}
    for name in out:
        np.testing.assert_allclose(again[name], out[name], atol=1e-6, err_msg=name)
    numpy_network = NumpyNetwork(serving_weights(network), config)
    keys = {}
    for variant in ("as is", "newest changed"):
        if variant == "newest changed":
            category[:, -1] = (category[:, -1] + 7) % 38 + 2
        states = numpy_network._recurrent_states(category, event_type, steps, event_type != 0) if arch == "gru" \
            else numpy_network._transformer(category, event_type, steps, event_type != 0)
        keys[variant] = states
    real = (event_type != 0)[:, :-1]  # a padding step's output is never read (the pointer masks it)
    np.testing.assert_allclose(keys["as is"][:, :-1][real], keys["newest changed"][:, :-1][real], atol=1e-6)
    assert np.abs(keys["as is"][:, -1] - keys["newest changed"][:, -1]).max() > 1e-3
