"""Export a trained Keras network to the artifact's serving file, ``serving.npz``, that the worker loads
(``model/runtime.py`` computes the network's outputs from it without TensorFlow).

The arrays are the network's weights under the names :meth:`model.runtime.NumpyNetwork.names` lists; nothing
is computed here that the runtime could get wrong silently: parity is tested on real windows
(``tests/unit/test_runtime.py``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelError

SERVING = "serving.npz"


def serving_weights(network: Any) -> dict[str, np.ndarray]:
    """The arrays of ``serving.npz`` from a network built by ``model.network.build_network``."""
    def dense(name: str, out: str | None = None) -> dict[str, np.ndarray]:
        layer = network.get_layer(name)
        found = {out or name: np.asarray(layer.kernel)}
        if layer.bias is not None:
            found[f"{out or name}_bias"] = np.asarray(layer.bias)
        return found

    weights: dict[str, np.ndarray] = {
        "category_embedding": np.asarray(network.get_layer("category_embedding").embeddings),
        "event_type_embedding": np.asarray(network.get_layer("event_type_embedding").embeddings),
    }
    recurrent = sorted(layer.name for layer in network.layers if layer.name.startswith(("lstm_", "gru_")))
    for name in recurrent:
        cell = network.get_layer(name).cell
        if (cell.activation.__name__, cell.recurrent_activation.__name__) != ("tanh", "sigmoid"):
            raise ValueError("the serving runtime computes recurrent layers with tanh and sigmoid activations only")
        if name.startswith("gru_") and not cell.reset_after:
            raise ValueError("the serving runtime computes a GRU with reset_after=True (Keras's default) only")
        weights.update({f"{name}/kernel": np.asarray(cell.kernel), f"{name}/recurrent": np.asarray(cell.recurrent_kernel),
                        f"{name}/bias": np.asarray(cell.bias)})
    names = [layer.name for layer in network.layers]
    if "transformer_input" in names:
        weights.update(dense("transformer_input"))
        weights["transformer_position"] = np.asarray(network.get_layer("transformer_position").position.embeddings)
        for name in sorted(n for n in names if n.startswith("transformer_") and n.split("_")[-1].isdigit()):
            block = network.get_layer(name)
            for norm in ("norm_attention", "norm_feed"):
                layer = getattr(block, norm)
                weights.update({f"{name}/{norm}/gamma": np.asarray(layer.gamma),
                                f"{name}/{norm}/beta": np.asarray(layer.beta)})
            for part in ("query", "key", "value", "output"):
                layer = getattr(block.attention, f"_{part}_dense")
                weights.update({f"{name}/{part}": np.asarray(layer.kernel), f"{name}/{part}_bias": np.asarray(layer.bias)})
            for part in ("feed_hidden", "feed_out"):
                layer = getattr(block, part)
                weights.update({f"{name}/{part}": np.asarray(layer.kernel), f"{name}/{part}_bias": np.asarray(layer.bias)})
        norm = network.get_layer("transformer_norm")
        weights.update({"transformer_norm/gamma": np.asarray(norm.gamma), "transformer_norm/beta": np.asarray(norm.beta)})
    attention = network.get_layer("attention")
    weights.update({
        "attention/keys": np.asarray(attention.keys.kernel), "attention/query": np.asarray(attention.query.kernel),
        "attention/distance_bias": np.asarray(attention.distance_bias.embeddings),
        "attention/feature_hidden": np.asarray(attention.feature_hidden.kernel),
        "attention/feature_hidden_bias": np.asarray(attention.feature_hidden.bias),
        "attention/query_hidden": np.asarray(attention.query_hidden.kernel),
        "attention/feature_score": np.asarray(attention.feature_score.kernel)})
    for name in ("category_gen", "gate", "intent_hidden", "event_type_head", "purchase_head"):
        weights.update(dense(name))
    return {name: value.astype(np.float32) for name, value in weights.items()}


def write_serving(network: Any, out: Path) -> Path:
    """Write ``out/serving.npz``; returns its path."""
    buffer = io.BytesIO()
    np.savez(buffer, **serving_weights(network))
    path = out / SERVING
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return path


def export_artifact(model_dir: str | Path) -> Path:
    """Write the serving file of an artifact from its Keras weights and record its sha256 in the manifest (for
    artifacts trained before the file existed, or after changing the export); returns the file's path."""
    from model.artifact import WEIGHTS, read_manifest, weights_digest, write_manifest
    from model.config import NetworkConfig
    from model.network import build_network

    root = Path(model_dir)
    manifest = read_manifest(root)
    network = build_network(NetworkConfig.from_json(manifest["network"]))
    try:
        network.load_weights(root / WEIGHTS)
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError... for a bad weights file
        raise ModelError(f"{root / WEIGHTS} cannot be loaded ({type(exc).__name__}: {exc})") from None
    path = write_serving(network, root)
    manifest["serving_sha256"] = weights_digest(path)
    write_manifest(root, manifest)
    return path
