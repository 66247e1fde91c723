"""The ``tensorflow`` serving runtime: the network's outputs computed by a fused graph built from the trained Keras
network's weights, compiled per shape (``model/runtime.py`` is the default, NumPy runtime).

The same function as ``network([category, event_type, steps], training=False)`` (``model/network.py``), rewritten
for inference on CPU, where the LSTM's recurrence is most of the cost:

- the LSTM's input projection folds into the embeddings: ``concat(E_c[c], E_e[e], s) @ W + b`` is
  ``(E_c @ W_c)[c] + (E_e @ W_e + b)[e] + s @ W_s``, two table lookups and a 9-column matmul done once for every
  step of the batch, instead of a 65-column matmul inside the recurrence;
- the recurrence is a ``tf.scan`` over time-major steps, which XLA compiles into one loop: per step one
  (B, units) x (units, 4 units) matmul and the gates (an unrolled loop compiles for ~20 s and runs slower);
- the layers after the LSTM (pointer attention, window summary, heads) are the network's own layers, called on
  the fused LSTM's states.

Padding is on the left and only there (``model/features.py``), so a padded step leaves the state at zero, as
Keras's masked LSTM does. ``tests/unit/test_model.py`` holds the fused outputs to the Keras network's.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelError
from model.features import DAY_MS, OOV, PAD
from model.tf_quiet import import_tensorflow

log = logging.getLogger(__name__)


def step_features(codes: Any, event_type: Any, t: Any, gap_scale: float) -> Any:
    """``model.features.step_features`` in TensorFlow, for the compiled serving function: (B, T) int columns
    (codes, event type inputs, int64 event times in ms) -> (B, T, N_STEP_FEATURES) float32.

    The repetition features compare every pair of steps ((B, T, T), 640k comparisons for 256 windows of 50,
    nothing for XLA) instead of the sort the NumPy version uses."""
    tf = import_tensorflow()
    valid = tf.not_equal(event_type, PAD)
    hour = tf.cast(t % DAY_MS, tf.float32) * np.float32(2 * math.pi / DAY_MS)
    dow = tf.cast((t // DAY_MS + 3) % 7, tf.float32) * np.float32(2 * math.pi / 7)
    gap_ms = tf.where(valid[:, 1:] & valid[:, :-1], t[:, 1:] - t[:, :-1], tf.zeros_like(t[:, 1:]))
    gap_ms = tf.concat([tf.zeros_like(t[:, :1]), gap_ms], axis=1)
    scale = np.float32(gap_scale)
    gap = tf.math.log1p(tf.cast(tf.maximum(gap_ms, 0), tf.float32) / 1000.0) / scale
    age = tf.math.log1p(tf.cast(tf.maximum(t[:, -1:] - t, 0), tf.float32) / 1000.0) / scale
    same = tf.equal(codes[:, :, None], codes[:, None, :])  # (B, T, T)
    count = tf.reduce_sum(tf.cast(same, tf.float32), axis=2)
    steps_after = tf.range(tf.shape(codes)[1])
    later = steps_after[None, :] > steps_after[:, None]  # (T, T): step j comes after step i
    newest_occurrence = tf.logical_not(tf.reduce_any(same & later[None], axis=2))
    same_as_newest = tf.equal(codes, codes[:, -1:])
    steps = tf.stack([tf.sin(hour), tf.cos(hour), tf.sin(dow), tf.cos(dow), gap, age,
                      tf.cast(same_as_newest, tf.float32), tf.math.log1p(count),
                      tf.cast(newest_occurrence, tf.float32)], axis=-1)
    return steps * tf.cast(valid, tf.float32)[..., None]


def fused_network(network: Any) -> Any:
    """A function ``(category, event_type, steps) -> outputs`` (the network's output dict) for serving only.

    Relies on ``build_network``'s layer names and its input order (category embedding, event type embedding,
    step features); a network with more than one LSTM layer or a shortened recurrence is served as it is. The
    weights are read here, once: load them before calling this."""
    tf = import_tensorflow()
    names = [layer.name for layer in network.layers]
    lstms = [name for name in names if name.startswith("lstm_")]
    if lstms != ["lstm_0"] or "recent_steps" in names:
        return lambda category, event_type, steps: network([category, event_type, steps], training=False)
    cell = network.get_layer("lstm_0").cell
    if (cell.activation.__name__, cell.recurrent_activation.__name__) != ("tanh", "sigmoid"):
        raise ValueError("the fused serving graph computes an LSTM with tanh and sigmoid activations only")
    category_table = network.get_layer("category_embedding").embeddings
    type_table = network.get_layer("event_type_embedding").embeddings
    kernel, recurrent, bias = (tf.convert_to_tensor(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias))
    c_dim, t_dim = int(category_table.shape[1]), int(type_table.shape[1])
    units = int(recurrent.shape[0])
    # the input projection, folded into each input's table (computed once, here)
    category_proj = tf.matmul(tf.convert_to_tensor(category_table), kernel[:c_dim])
    type_proj = tf.matmul(tf.convert_to_tensor(type_table), kernel[c_dim:c_dim + t_dim]) + bias
    steps_kernel = kernel[c_dim + t_dim:]
    # Keras's gate order is i, f, g (the cell input, tanh), o: 1/2 scales and shifts the three sigmoid gates
    half, one = tf.fill((units,), 0.5), tf.ones((units,))
    gate_scale = tf.concat([half, half, one, half], axis=0)
    gate_shift = tf.concat([half, half, tf.zeros((units,)), half], axis=0)
    attention = network.get_layer("attention")
    summary = network.get_layer("window_summary")
    intent_hidden = network.get_layer("intent_hidden")
    heads = {name: network.get_layer(layer) for name, layer in (
        ("category_gen", "category_gen"), ("gate", "gate"), ("event_type", "event_type_head"),
        ("purchase", "purchase_head"))}

    def run(category: Any, event_type: Any, steps: Any) -> dict[str, Any]:
        mask = tf.not_equal(event_type, 0)
        batch = tf.shape(category)[0]
        # time-major (T, B, 4 units): each step reads one contiguous slice
        projected = (tf.gather(category_proj, tf.transpose(category)) + tf.gather(type_proj, tf.transpose(event_type))
                     + tf.einsum("btf,fg->tbg", steps, steps_kernel))
        zeros = tf.zeros((batch, units))

        def step(carry: tuple[Any, Any], inputs: tuple[Any, Any]) -> tuple[Any, Any]:
            h, c = carry
            z, valid = inputs
            # the four gates in one tanh: sigmoid(x) = (1 + tanh(x / 2)) / 2, and XLA's tanh is far cheaper
            # than its sigmoid on CPU (the recurrence: 9.1 -> 6.4 ms for 256 windows of 50 steps)
            gates = tf.tanh((z + tf.matmul(h, recurrent)) * gate_scale) * gate_scale + gate_shift
            i, f, g, o = tf.split(gates, 4, axis=1)
            c_new = f * c + i * g
            h_new = o * tf.tanh(c_new)
            return tf.where(valid, h_new, h), tf.where(valid, c_new, c)

        states, _ = tf.scan(step, (projected, tf.transpose(mask)[:, :, None]), initializer=(zeros, zeros))
        states = tf.transpose(states, (1, 0, 2))  # (B, T, units)
        newest = states[:, -1]
        out = {"attention": attention([states, steps, mask, newest]),
               "category_gen": heads["category_gen"](newest), "gate": heads["gate"](newest)}
        intent = intent_hidden(tf.concat([newest, summary([event_type, steps, mask])], axis=-1))
        out["event_type"] = heads["event_type"](intent)
        out["purchase"] = heads["purchase"](intent)
        return out

    return run


COLUMNS = ("category", "code", "event_type", "time_ms")  # the serving step's inputs (features.window_columns)


class _NoRetracingNotice(logging.Filter):
    """Each (batch, length) shape has a tf.function of its own on purpose: TF's retracing notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _signature(tf: Any, batch: int, length: int) -> list[Any]:
    return [tf.TensorSpec((batch, length), tf.int64 if name == "time_ms" else tf.int32) for name in COLUMNS]


def _call_with_zeros(function: Any, shape: tuple[int, int]) -> None:
    batch, length = shape
    ones_last = np.zeros((batch, length), dtype=np.int32)
    ones_last[:, -1] = 1
    function(ones_last, ones_last, ones_last, np.zeros((batch, length), dtype=np.int64))


class TensorFlowServing:
    """The ``tensorflow`` runtime's serving step (``model.predictor.Predictor(runtime="tensorflow")``): the
    Keras network's fused graph compiled per fixed (batch, length) shape; a batch runs on the smallest usable
    shape that holds it, padded.

    ``warm``: True compiles every shape at load; "first" serves at once on the largest shape, traced without
    XLA, until :meth:`warm` compiles the others; False compiles each shape when first used."""

    max_rows = 1 << 30  # a call takes up to the largest batch shape

    def __init__(self, weights: Path, config: Any, gap_scale: float, k: int, with_copy: bool,
                 batch_sizes: Sequence[int], lengths: Sequence[int], *, threads: int | None,
                 jit_compile: bool, warm: bool | str) -> None:
        tf = import_tensorflow()
        logging.getLogger("tensorflow").addFilter(_NoRetracingNotice())
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TF already initialised in this process: keep its thread pools
                log.warning("TensorFlow is already initialised; thread counts left as they are")
        from model.network import build_network

        try:
            self.network = build_network(config)
            self.network.load_weights(weights)
        except Exception as exc:  # Keras raises ValueError, OSError, KeyError... for a bad weights file
            raise ModelError(f"{weights} cannot be loaded ({type(exc).__name__}: {exc})") from None
        network = fused_network(self.network)

        def serve(category: Any, code: Any, event_type: Any, time_ms: Any) -> tuple[Any, ...]:
            # the step features in the graph: no per-window NumPy work before the call
            out = network(category, event_type, step_features(code, event_type, time_ms, gap_scale))
            gate = out["gate"]
            gen = out["category_gen"] * gate
            # padding and OOV are not categories anyone can be shown
            gen = tf.concat([tf.zeros_like(gen[:, :2]), gen[:, 2:]], axis=1)
            copy = out["attention"] * (1.0 - gate)
            in_vocab = category > OOV
            rows = tf.broadcast_to(tf.range(tf.shape(category)[0])[:, None], tf.shape(category))
            # every step scatters (static shapes); padding and OOV steps add 0 to the zeroed columns 0 and 1
            scores = tf.tensor_scatter_nd_add(
                gen, tf.stack([rows, category], axis=-1), tf.where(in_vocab, copy, 0.0))
            top = tf.math.top_k(scores, k=k)
            oov_copy = tf.where(category == OOV, copy, 0.0)
            served = (top.indices, top.values, oov_copy, out["event_type"], out["purchase"][:, 0])
            return (*served, copy) if with_copy else served

        self.functions: dict[tuple[int, int], Any] = {}  # compiled with XLA when first called
        for length in lengths:
            for batch in batch_sizes:
                self.functions[(batch, length)] = tf.function(serve, input_signature=_signature(tf, batch, length),
                                                              jit_compile=jit_compile, reduce_retracing=False)
        self.shapes_total = len(self.functions)
        self.compiled: set[tuple[int, int]] = set()
        # the function each usable shape runs: every shape (compiled on first use) unless warm="first"
        self.serving: dict[tuple[int, int], Any] = dict(self.functions)
        if warm == "first":
            largest = (max(batch_sizes), max(lengths))
            plain = tf.function(serve, input_signature=_signature(tf, *largest), jit_compile=False)
            started = time.perf_counter()
            _call_with_zeros(plain, largest)
            self.serving = {largest: plain}
            self.warm_s = time.perf_counter() - started
        else:
            self.warm_s = self.warm() if warm else 0.0

    def length_buckets(self) -> list[int]:
        return sorted({t for _, t in list(self.serving)})

    def shape_for(self, rows: int, length: int) -> tuple[int, int]:
        """The cheapest usable (batch, length) shape that holds ``rows`` windows of ``length`` steps."""
        return min(((b, t) for b, t in list(self.serving) if b >= rows and t >= length),
                   key=lambda s: (s[0] * s[1], s))

    def warm(self, shapes: Sequence[tuple[int, int]] | None = None) -> float:
        start = time.perf_counter()
        for shape in shapes if shapes is not None else list(self.functions):
            _call_with_zeros(self.functions[shape], shape)
            self.compiled.add(shape)
            self.serving[shape] = self.functions[shape]
        return time.perf_counter() - start

    def shapes_to_compile(self) -> list[tuple[int, int]]:
        return [shape for shape in self.functions if shape not in self.compiled]

    def __call__(self, shape: tuple[int, int], *columns: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(value.numpy() for value in self.serving[shape](*columns))
