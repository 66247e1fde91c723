"""The network's serving function in NumPy: what the worker runs, without TensorFlow.

``train`` writes the trained network's weights, rearranged for inference, to ``serving.npz`` in the artifact
(:func:`model.export.write_serving`; its sha256 in the manifest); :class:`NumpyNetwork` computes from them the
same outputs as the Keras network (``model/network.py``), and :func:`serve_columns` the predictor's whole
serving step (step features, network, the pointer's copy mass added to the generator, top-k).

How the LSTM runs cheaply:

- the input projection folds into the embeddings: ``concat(E_c[c], E_e[e], s) @ W + b`` is
  ``(E_c @ W_c)[c] + (E_e @ W_e + b)[e] + s @ W_s``: two table lookups and one small matmul for all steps;
- padding is on the left and only there (``model/features.py``), so at step t the rows whose window has
  started are those longest first: rows are ordered by length, and each step computes only that prefix (a
  padded step would leave the state at zero, as Keras's masked LSTM does);
- the four gates take one tanh: ``sigmoid(x) = (1 + tanh(x / 2)) / 2``.

``tests/unit/test_runtime.py`` holds every output to the Keras network's on real windows.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from model.config import ARCHITECTURES, NetworkConfig
from model.features import GAP_SCALE, OOV, PAD, STEP_FEATURES, step_features

AGE = STEP_FEATURES.index("age")
# WindowSummary's soft cut-offs on the scaled age feature (model/network.py): ~1 min, 10 min, 30 min, 5 h
SUMMARY_CUTOFFS = np.asarray([math.log1p(s) / GAP_SCALE for s in (60, 600, 1800, 18000)], dtype=np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float = 1e-3) -> np.ndarray:
    """Keras's LayerNormalization over the last axis (its default epsilon, and its order of operations)."""
    mean = x.mean(axis=-1, keepdims=True)
    variance = np.square(x - mean).mean(axis=-1, keepdims=True)
    scale = gamma / np.sqrt(variance + np.float32(epsilon))
    return x * scale + (beta - mean * scale)


class NumpyNetwork:
    """``network([category, event_type, steps], training=False)`` from the arrays of ``serving.npz``."""

    def __init__(self, weights: Mapping[str, np.ndarray], config: NetworkConfig) -> None:
        self.w = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()}
        self.config = config
        self.arch = config.arch
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"architecture {self.arch!r}: this runtime computes {', '.join(ARCHITECTURES)}")
        self.layers = config.lstm_layers
        self.short = 0 < config.recurrent_steps < config.window_length
        self.units = units = config.lstm_units
        missing = [name for name in self.names() if name not in self.w]
        if missing:
            raise KeyError(f"serving weights lack {', '.join(missing)}")
        if self.arch == "lstm":
            # each layer's gates reordered to (i, f, o, g) and the three sigmoid gates' columns halved, so that one
            # tanh computes all four (sigmoid(x) = (1 + tanh(x / 2)) / 2)
            order = np.r_[0:2 * units, 3 * units:4 * units, 2 * units:3 * units]
            scale = np.r_[np.full(3 * units, 0.5), np.ones(units)].astype(np.float32)
            self.recurrent = [tuple(self.w[f"lstm_{i}/{part}"][..., order] * scale
                                    for part in ("kernel", "recurrent", "bias")) for i in range(self.layers)]
        elif self.arch == "gru":  # gates (z, r, h); bias[0] is the input's, bias[1] the recurrence's
            self.recurrent = [tuple(self.w[f"gru_{i}/{part}"] for part in ("kernel", "recurrent", "bias"))
                              for i in range(self.layers)]
        kernel, bias = ((self.w["transformer_input"], self.w["transformer_input_bias"]) if self.arch == "transformer"
                        else (self.recurrent[0][0], self.recurrent[0][2]))
        bias = bias[0] if bias.ndim == 2 else bias
        c_dim = self.w["category_embedding"].shape[1]
        t_dim = self.w["event_type_embedding"].shape[1]
        # the first layer's input projection folded into the embedding tables
        self.category_projection = self.w["category_embedding"] @ kernel[:c_dim]
        self.type_projection = self.w["event_type_embedding"] @ kernel[c_dim:c_dim + t_dim] + bias
        self.steps_kernel = np.ascontiguousarray(kernel[c_dim + t_dim:])

    def names(self) -> list[str]:
        """The arrays this network reads (``model.export.serving_weights`` writes them)."""
        if self.arch == "transformer":
            parts = [f"{norm}/{p}" for norm in ("norm_attention", "norm_feed") for p in ("gamma", "beta")] + [
                f"{p}{bias}" for p in ("query", "key", "value", "output", "feed_hidden", "feed_out")
                for bias in ("", "_bias")]
            sequence = ["transformer_input", "transformer_input_bias", "transformer_position",
                        "transformer_norm/gamma", "transformer_norm/beta",
                        *(f"transformer_{i}/{part}" for i in range(self.layers) for part in parts)]
        else:
            sequence = [f"{self.arch}_{i}/{part}" for i in range(self.layers) for part in ("kernel", "recurrent", "bias")]
        return ["category_embedding", "event_type_embedding", *sequence, "attention/keys", "attention/query",
                "attention/distance_bias", "attention/feature_hidden", "attention/feature_hidden_bias",
                "attention/query_hidden", "attention/feature_score", "category_gen", "category_gen_bias", "gate",
                "gate_bias", "intent_hidden", "intent_hidden_bias", "event_type_head", "event_type_head_bias",
                "purchase_head", "purchase_head_bias"]

    def __call__(self, category: np.ndarray, event_type: np.ndarray, steps: np.ndarray) -> dict[str, np.ndarray]:
        w = self.w
        mask = event_type != PAD
        b, t = category.shape
        first = t - self.config.recurrent_steps if self.short else 0  # the sequence layers read steps first..t-1
        if self.arch == "transformer":
            states = self._transformer(category[:, first:], event_type[:, first:], steps[:, first:], mask[:, first:])
        else:
            states = self._recurrent_states(category[:, first:], event_type[:, first:], steps[:, first:], mask)
        newest = states[:, -1]
        if self.short:
            keys = np.concatenate([w["category_embedding"][category], w["event_type_embedding"][event_type], steps],
                                  axis=-1)
        else:
            keys = states
        intent = np.concatenate([newest, self._summary(event_type, steps, mask)], axis=-1)
        intent = np.maximum(intent @ w["intent_hidden"] + w["intent_hidden_bias"], 0)
        return {"attention": self._attention(keys, steps, mask, newest),
                "category_gen": _softmax(newest @ w["category_gen"] + w["category_gen_bias"]),
                "gate": _sigmoid(newest @ w["gate"] + w["gate_bias"]),
                "event_type": _softmax(intent @ w["event_type_head"] + w["event_type_head_bias"]),
                "purchase": _sigmoid(intent @ w["purchase_head"] + w["purchase_head_bias"])}

    def _recurrent_states(self, category: np.ndarray, event_type: np.ndarray, steps: np.ndarray,
                          mask: np.ndarray) -> np.ndarray:
        """(B, T, units) states of the LSTM or GRU layers over the (B, T) window columns."""
        b, t = category.shape
        lengths = np.minimum(mask.sum(axis=1), t)
        order = np.argsort(-lengths, kind="stable")  # longest first: the rows a step computes are a prefix
        # time-major (T, B, gates x units) input projections, rows in that order
        projected = self.category_projection[category[order].T]
        projected += self.type_projection[event_type[order].T]
        projected += (steps @ self.steps_kernel)[order].transpose(1, 0, 2)
        states = None
        for i, (kernel, recurrent, bias) in enumerate(self.recurrent):
            if i:
                projected = states @ kernel + (bias[0] if bias.ndim == 2 else bias)
            states = (self._lstm(projected, lengths[order], recurrent) if self.arch == "lstm"
                      else self._gru(projected, lengths[order], recurrent, bias[1]))
        assert states is not None
        out = np.empty((b, t, self.units), dtype=np.float32)
        out[order] = states.transpose(1, 0, 2)
        return out

    def _gru(self, projected: np.ndarray, lengths: np.ndarray, recurrent: np.ndarray,
             recurrent_bias: np.ndarray) -> np.ndarray:
        """Time-major states (T, B, units) of a GRU (Keras's reset_after form) over (T, B, 3 units) input
        projections (gates z, r, h), rows ordered longest first; a row's state stays zero until its window
        starts."""
        t, b, three = projected.shape
        units = three // 3
        started = np.searchsorted(-lengths, -(t - np.arange(t)), side="right")  # rows started by step s
        out = np.zeros((t + 1, b, units), dtype=np.float32)
        for s in range(t):
            n = int(started[s])
            if n == 0:
                continue
            h = out[s, :n]
            inner = h @ recurrent + recurrent_bias
            x = projected[s, :n]
            gates = _sigmoid(x[:, :2 * units] + inner[:, :2 * units])
            z, r = gates[:, :units], gates[:, units:]
            candidate = np.tanh(x[:, 2 * units:] + r * inner[:, 2 * units:])
            out[s + 1, :n] = z * h + (1 - z) * candidate
        return out[1:]

    def _transformer(self, category: np.ndarray, event_type: np.ndarray, steps: np.ndarray,
                     mask: np.ndarray) -> np.ndarray:
        """(B, T, units) outputs of the causal Transformer blocks (``model.network.CausalSelfAttention``)."""
        w = self.w
        t = category.shape[1]
        x = self.category_projection[category] + self.type_projection[event_type] + steps @ self.steps_kernel
        x += w["transformer_position"][np.minimum(np.arange(t - 1, -1, -1), self.config.window_length - 1)][None]
        allowed = np.tril(np.ones((t, t), dtype=bool))[None, None] & mask[:, None, None, :]  # (B, 1, T, T)
        for i in range(self.layers):
            p = f"transformer_{i}/"
            a = _layer_norm(x, w[p + "norm_attention/gamma"], w[p + "norm_attention/beta"])
            q, k, v = (np.einsum("btu,uhk->bhtk", a, w[p + name]) + w[p + name + "_bias"][None, :, None, :]
                       for name in ("query", "key", "value"))
            scores = np.matmul(q / np.float32(math.sqrt(q.shape[-1])), k.transpose(0, 1, 3, 2))
            attended = np.matmul(_softmax(np.where(allowed, scores, np.float32(-1e9))), v)  # (B, H, T, K)
            x = x + np.einsum("bhtk,hku->btu", attended, w[p + "output"]) + w[p + "output_bias"]
            f = np.maximum(_layer_norm(x, w[p + "norm_feed/gamma"], w[p + "norm_feed/beta"]) @ w[p + "feed_hidden"]
                           + w[p + "feed_hidden_bias"], 0)
            x = x + f @ w[p + "feed_out"] + w[p + "feed_out_bias"]
        return _layer_norm(x, w["transformer_norm/gamma"], w["transformer_norm/beta"])

    def _lstm(self, projected: np.ndarray, lengths: np.ndarray, recurrent: np.ndarray) -> np.ndarray:
        """Time-major states (T, B, units) of an LSTM over (T, B, 4 units) input projections (gates (i, f, o, g),
        sigmoid gates halved), rows ordered longest first; a row's state stays zero until its window starts."""
        t, b, four = projected.shape
        units = four // 4
        started = np.searchsorted(-lengths, -(t - np.arange(t)), side="right")  # rows started by step s
        out = np.zeros((t + 1, b, units), dtype=np.float32)  # out[s + 1]: states after step s; out[0]: zeros
        c = np.zeros((b, units), dtype=np.float32)
        gates_buffer = np.empty((b, four), dtype=np.float32)
        product = np.empty((b, units), dtype=np.float32)
        for s in range(t):
            n = int(started[s])
            if n == 0:
                continue
            gates = gates_buffer[:n]
            np.matmul(out[s, :n], recurrent, out=gates)
            gates += projected[s, :n]
            np.tanh(gates, out=gates)
            sigmoid = gates[:, :3 * units]
            sigmoid *= 0.5
            sigmoid += 0.5
            cell, h = c[:n], out[s + 1, :n]
            cell *= gates[:, units:2 * units]
            np.multiply(gates[:, :units], gates[:, 3 * units:], out=product[:n])
            cell += product[:n]
            np.tanh(cell, out=h)
            h *= gates[:, 2 * units:3 * units]
        return out[1:]

    def _attention(self, keys: np.ndarray, steps: np.ndarray, mask: np.ndarray, newest: np.ndarray) -> np.ndarray:
        w = self.w
        t = keys.shape[1]
        query = newest @ w["attention/query"]
        scores = np.matmul(keys @ w["attention/keys"], query[:, :, None])[..., 0]
        scores /= np.float32(math.sqrt(self.units))
        hidden = np.tanh(steps @ w["attention/feature_hidden"] + w["attention/feature_hidden_bias"]
                         + (newest @ w["attention/query_hidden"])[:, None, :])
        scores += (hidden @ w["attention/feature_score"])[..., 0]
        distance = np.minimum(np.arange(t - 1, -1, -1), self.config.window_length - 1)
        scores += w["attention/distance_bias"][distance, 0][None]
        return _softmax(np.where(mask, scores, np.float32(-1e9)))

    def _summary(self, event_type: np.ndarray, steps: np.ndarray, mask: np.ndarray) -> np.ndarray:
        valid = mask.astype(np.float32)
        k = self.config.n_event_types
        types = (event_type[..., None] == np.arange(1, k)).astype(np.float32) * valid[..., None]  # (B, T, K-1)
        age = steps[..., AGE]
        spans = np.concatenate([valid[..., None], _sigmoid(20.0 * (SUMMARY_CUTOFFS - age[..., None])) * valid[..., None]],
                               axis=-1)  # (B, T, S)
        per_type = np.matmul(spans.transpose(0, 2, 1), types)  # (B, S, K-1)
        events = spans.sum(axis=1)
        return np.log1p(np.concatenate([per_type.reshape(len(event_type), -1), events], axis=-1))


def serve_columns(network: NumpyNetwork, gap_scale: float, k: int, category: np.ndarray, code: np.ndarray,
                  event_type: np.ndarray, time_ms: np.ndarray, with_copy: bool = False) -> tuple[np.ndarray, ...]:
    """The predictor's serving step on (B, T) window columns (``model.features.window_columns``): top-k category
    indexes and scores (the generator times the gate plus the pointer's copy mass of in-vocabulary steps), the
    copy mass of out-of-vocabulary steps, event type probabilities, purchase probability, and with
    ``with_copy`` the pointer's copy weights of every step."""
    out = network(category, event_type, step_features(code, event_type, time_ms, gap_scale))
    gate = out["gate"]
    scores = out["category_gen"] * gate
    scores[:, :2] = 0.0  # padding and OOV are not categories anyone can be shown
    copy = out["attention"] * (1.0 - gate)
    b, t = category.shape
    in_vocab = category > OOV
    rows = np.broadcast_to(np.arange(b)[:, None], (b, t))
    flat = scores.reshape(-1)
    np.add.at(flat, (rows * scores.shape[1] + category)[in_vocab], copy[in_vocab])
    k = min(k, scores.shape[1])
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    candidates.sort(axis=1)  # ties rank the lower index first (tf.math.top_k's order)
    values = np.take_along_axis(scores, candidates, axis=1)
    by_score = np.argsort(-values, axis=1, kind="stable")
    top = np.take_along_axis(candidates, by_score, axis=1)
    served = (top, np.take_along_axis(values, by_score, axis=1), np.where(category == OOV, copy, 0.0),
              out["event_type"], out["purchase"][:, 0])
    return (*served, copy) if with_copy else served
