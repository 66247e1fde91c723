"""The batched predictor the streaming worker calls: one call predicts many users' windows.

Two runtimes compute the network's serving step:

- ``numpy`` (the default): the artifact's ``serving.npz`` run by ``model/runtime.py``; TensorFlow is never
  imported, any (batch, length) shape runs as it comes, nothing to warm;
- ``tensorflow``: the Keras network's fused serving graph (``model/serving.py``) in a compiled
  ``tf.function`` (XLA by default) per fixed (batch, length) shape, traced and warmed when the predictor
  loads; batches are padded to the smallest shape that holds them. Kept to compare against
  (``python -m benchmarks predictor``) and for artifacts without a serving file.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from core.errors import ModelError
from core.records import Driver
from model.artifact import WEIGHTS, read_manifest, weights_digest
from model.baselines import StoredBaselines
from model.config import NetworkConfig
from model.explain import batch_drivers
from model.export import SERVING
from model.features import CategoryCodes, FeatureSpec, window_columns, window_index
from model.mix import rank as mixed_rank
from model.runtime import NumpyNetwork, serve_columns
from model.window import Window

log = logging.getLogger(__name__)

RUNTIMES = ("numpy", "tensorflow")


@dataclasses.dataclass
class BatchPrediction:
    """Predictions for a batch of windows, row i for window i."""

    top_categories: list[list[tuple[str, float]]]
    event_type_probs: np.ndarray  # (B, len(event_types)), columns in ``event_types`` order
    purchase_probability: np.ndarray  # (B,) the served one: after the purchase stage (model/purchase.py)
    window_lengths: np.ndarray  # (B,)
    event_types: tuple[str, ...]
    network_top: list[list[tuple[str, float]]] | None = None  # the network's own ranking (predict(candidates=True))
    # with Predictor(drivers=k): per window, the probability the pointer copied from each of its newest
    # window_lengths[i] events, (1 - gate) x attention, and the k events that drove the top category
    copy_weights: list[np.ndarray] | None = None
    drivers: list[tuple[Driver, ...]] | None = None
    purchase_head: np.ndarray | None = None  # (B,) the network's purchase head, before the purchase stage


NETWORK_CANDIDATES = 30
MAX_CATEGORY_CODES = 1_000_000  # raw ids a predictor keeps codes for before it starts a new table


def _buckets(values: Sequence[int], cap: int) -> tuple[int, ...]:
    return tuple(sorted({min(v, cap) for v in values} | {cap}))


COLUMNS = ("category", "code", "event_type", "time_ms")  # what the serving step takes (features.window_columns)


class Predictor:
    """Loads an artifact folder and predicts batches of windows.

    With ``drivers`` > 0 each prediction also carries the pointer's copy weights and the ``drivers`` window
    events that drove its top category (``model/explain.py``); the serving step then returns the attention
    too, which the default (0) leaves out. ``candidates`` lets :meth:`predict` return the network's own
    ranking of ``NETWORK_CANDIDATES`` categories (training and evaluation); without it a model whose mix is
    the network alone ranks only the ``top_k`` it shows. ``batch_sizes``, ``lengths``, ``threads``,
    ``jit_compile`` and ``warm`` concern the ``tensorflow`` runtime's compiled shapes; ``lengths`` also groups
    the windows of a call in both (short windows never pay for the longest one).
    """

    def __init__(self, model_dir: str | Path, *, batch_sizes: Sequence[int] = (1, 8, 32, 128, 512),
                 lengths: Sequence[int] = (8, 16, 32), top_k: int = 10, threads: int | None = None,
                 jit_compile: bool = True, warm: bool | str = True, drivers: int = 0,
                 candidates: bool = False, runtime: str = "numpy") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.version: str = self.manifest["version"]
        self.config = NetworkConfig.from_json(self.manifest["network"])
        self.spec = FeatureSpec.from_json(self.manifest["features"])
        self.window_length = self.config.window_length
        self.top_k = top_k
        self.drivers = drivers
        self.runtime = runtime
        try:
            self.baselines = StoredBaselines.load(self.model_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{self.model_dir}: stored baselines cannot be read ({type(exc).__name__}: {exc})") \
                from None
        self.network_only = not any(w for name, w in self.baselines.mix.items() if name != "network")
        self.candidates = candidates
        # the network proposes more candidates than it shows when the mix with the stored baselines re-ranks
        # them, or when they are asked for
        shown = top_k if self.network_only and not candidates else max(top_k, NETWORK_CANDIDATES)
        self.network_k = max(1, min(shown, len(self.spec.categories)))
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        self.lengths = _buckets(lengths, self.window_length)
        self._prior = self._prior_prediction()
        self._code_table = CategoryCodes(self.spec)
        if runtime == "numpy":
            if threads:  # BLAS threads of this process (OpenBLAS spins its idle threads: each costs CPU)
                threadpool_limits(threads, user_api="blas")
            self.serving: Any = NumpyServing(self._numpy_network(), self.spec.gap_scale, self.network_k,
                                             bool(drivers), self.lengths)
        else:
            from model.serving import TensorFlowServing

            self.serving = TensorFlowServing(self.model_dir / WEIGHTS, self.config, self.spec.gap_scale,
                                             self.network_k, bool(drivers), self.batch_sizes, self.lengths,
                                             threads=threads, jit_compile=jit_compile, warm=warm)

    def _numpy_network(self) -> NumpyNetwork:
        path = self.model_dir / SERVING
        expected = self.manifest.get("serving_sha256")
        if not path.is_file() or not expected:
            raise ModelError(f"{path} is missing: export it from the trained network with "
                             f"`clickstream export {self.model_dir}` (or serve with the tensorflow runtime)")
        if weights_digest(path) != expected:
            raise ModelError(f"{path} does not match its manifest (sha256 differs): the artifact is corrupt")
        try:
            with np.load(path) as arrays:
                return NumpyNetwork(dict(arrays), self.config)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{path} cannot be loaded ({type(exc).__name__}: {exc})") from None

    @property
    def warm_s(self) -> float:
        """Seconds the load spent compiling (the tensorflow runtime)."""
        return float(self.serving.warm_s)

    @property
    def shapes_warm(self) -> int:
        """Shapes compiled so far (the tensorflow runtime; 0 for numpy, which compiles nothing)."""
        return len(self.serving.compiled)

    @property
    def shapes_total(self) -> int:
        return int(self.serving.shapes_total)

    def warm(self, shapes: Sequence[tuple[int, int]] | None = None) -> float:
        """Compile these (batch, length) shapes (default: all) and let batches use them; the seconds it took."""
        return float(self.serving.warm(shapes))

    def shapes_to_compile(self) -> list[tuple[int, int]]:
        return list(self.serving.shapes_to_compile())

    def warm_rest(self) -> float:
        """Compile the shapes that ``warm="first"`` left out (until a shape is compiled, its batches run on a
        larger usable one)."""
        return self.warm(self.shapes_to_compile())

    def _codes(self) -> CategoryCodes:
        """The code table for one batch: a new one once out-of-vocabulary ids have filled the current (a batch
        keeps the table it started with, so its codes stay comparable)."""
        if len(self._code_table) > self._code_table.vocabulary + MAX_CATEGORY_CODES:
            self._code_table = CategoryCodes(self.spec)
        return self._code_table

    def _prior_prediction(self) -> tuple[list[tuple[str, float]], np.ndarray, float]:
        prior = self.manifest["prior"]
        cats = [(str(c), float(p)) for c, p in prior["categories"][: self.top_k]]
        types = np.asarray(prior["event_types"], dtype=np.float32)
        return cats, types, float(prior["purchase_probability"])

    def predict(self, windows: Sequence[Window], candidates: bool = False) -> BatchPrediction:
        """Predict every window in one call: grouped by length bucket, in chunks of the largest batch size.

        With ``candidates`` (a predictor built with ``candidates=True``) the prediction carries
        ``network_top``, the network's own ranking of its ``network_k`` candidates (what training tunes the
        mix on); without it, and with a network-only mix, only the ``top_k`` shown become Python objects.
        """
        if candidates and not self.candidates:
            raise ValueError("predict(candidates=True) needs a Predictor built with candidates=True")
        n = len(windows)
        lengths = np.fromiter((min(len(w.categories), self.window_length) for w in windows), np.int64, n)
        top: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        network_top: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        n_types = len(self.spec.event_types)
        types = np.zeros((n, n_types), dtype=np.float32)
        purchase = np.zeros(n, dtype=np.float32)
        head = np.zeros(n, dtype=np.float32)
        copies = [np.zeros(0, dtype=np.float32)] * n if self.drivers else None
        steps: list[tuple[np.ndarray, ...]] = []  # with drivers: per chunk, its rows and their steps
        # each length bucket runs on its own: short windows never pay for the longest one in the batch
        bucket_of = np.searchsorted(np.asarray(self.serving.length_buckets()), lengths)
        largest = min(self.batch_sizes[-1], self.serving.max_rows)
        network_only = self.network_only
        width = self.top_k if network_only and not candidates else self.network_k
        for bucket in np.unique(bucket_of[lengths > 0]):
            rows = np.flatnonzero((bucket_of == bucket) & (lengths > 0))
            for chunk_start in range(0, len(rows), largest):
                chunk = rows[chunk_start: chunk_start + largest]
                self._predict_rows([windows[i] for i in chunk], chunk, lengths[chunk], width, network_top, types,
                                   purchase, head, copies, steps)
        for i in np.flatnonzero(lengths > 0):
            if network_only:  # the same ranking as the mix with all weight on the network, without its cost
                top[i] = network_top[i][: self.top_k]
                continue
            window = windows[i].categories[len(windows[i].categories) - lengths[i]:]
            top[i] = mixed_rank(self.baselines, window, network_top[i], self.top_k)
        if (lengths == 0).any():
            prior_cats, prior_types, prior_purchase = self._prior
            for i in np.flatnonzero(lengths == 0):
                top[i] = network_top[i] = list(prior_cats)
                types[i] = prior_types
                purchase[i] = head[i] = prior_purchase
        drivers: list[tuple[Driver, ...]] | None = None
        if copies is not None:
            drivers = [()] * n
            for rows, step_codes, *chunk, code_of in steps:  # against the final top category, the mix's
                tops = [top[i][0][0] for i in rows]
                top_codes = np.fromiter(map(code_of.__getitem__, tops), dtype=np.int64, count=len(tops))
                for i, found in zip(rows, batch_drivers(tops, top_codes, step_codes, *chunk, self.drivers)):
                    drivers[i] = found
        return BatchPrediction(top, types, purchase, lengths, self.spec.event_types,
                               network_top if candidates else None, copies, drivers, head)

    def _predict_rows(self, windows: list[Window], rows: np.ndarray, lengths: np.ndarray, width: int,
                      top: list[list[tuple[str, float]]], types: np.ndarray, purchase: np.ndarray,
                      head: np.ndarray, copies: list[np.ndarray] | None, steps: list[tuple[np.ndarray, ...]]) -> None:
        b = len(windows)
        batch, length = self.serving.shape_for(b, int(lengths.max()))
        # flat columns of the windows' newest `length` events, then the one feature function
        firsts = [len(w) - k for w, k in zip(windows, lengths.tolist())]
        flat_cats = list(itertools.chain.from_iterable(w.categories[a:] for w, a in zip(windows, firsts)))
        flat_types = np.concatenate([w.event_types[a:] for w, a in zip(windows, firsts)])
        flat_times = np.concatenate([w.times_ms[a:] for w, a in zip(windows, firsts)])
        ends = np.cumsum(lengths)
        index = window_index(ends, ends - lengths, length)
        code_of = self._codes()
        codes = np.fromiter(map(code_of.__getitem__, flat_cats), dtype=np.int64, count=len(flat_cats))
        x = window_columns(code_of.input_index(codes), codes.astype(np.int32), flat_types, flat_times, index)
        # the shape's spare rows are padding (event type 0): their outputs are dropped
        idx, scores, oov_copy, event_type, buy, *copy = self.serving((batch, length), *(
            x[name] if batch == b else np.concatenate([x[name], np.zeros((batch - b, length), x[name].dtype)])
            for name in COLUMNS))
        if copies is not None:
            weights = copy[0][:b]
            for r in range(b):  # left padding: a window's events are the last lengths[r] steps
                copies[rows[r]] = weights[r, length - lengths[r]:]
            valid, safe = index >= 0, np.maximum(index, 0)
            first = np.fromiter((len(w) for w in windows), dtype=np.int64, count=b) - length
            steps.append((rows, np.where(valid, codes[safe], -1), weights, flat_types[safe], flat_times[safe], first,
                          code_of))
        idx, scores, oov_copy = idx[:b, :width], scores[:b, :width], oov_copy[:b]
        types[rows] = event_type[:b]
        head[rows] = buy[:b]
        stage = self.baselines.purchase
        purchase[rows] = stage(buy[:b], x["code"], x["event_type"], x["time_ms"]) if stage else buy[:b]
        names, score_rows = self.spec.index_to_category[idx].tolist(), scores.tolist()
        for r, best in enumerate(map(list, map(zip, names, score_rows))):
            top[rows[r]] = best
        # out-of-vocabulary categories are copied by their raw id; only their steps are visited (oov_copy is 0
        # at padding and in-vocabulary steps)
        hit_rows, hit_steps = np.nonzero(oov_copy > 0)
        mass: dict[int, dict[str, float]] = {}
        for r, pos, p in zip(hit_rows.tolist(), index[hit_rows, hit_steps].tolist(),
                             oov_copy[hit_rows, hit_steps].tolist()):
            row_mass = mass.setdefault(r, {})
            raw = flat_cats[pos]
            row_mass[raw] = row_mass.get(raw, 0.0) + p
        for r, row_mass in mass.items():
            merged = dict(top[rows[r]])
            for raw, p in row_mass.items():
                merged[raw] = merged.get(raw, 0.0) + p
            top[rows[r]] = sorted(merged.items(), key=itemgetter(1), reverse=True)[:width]  # stable, as before



class NumpyServing:
    """The ``numpy`` runtime's serving step: any (batch, length) shape, nothing compiled."""

    warm_s = 0.0
    shapes_total = 0
    compiled: frozenset[tuple[int, int]] = frozenset()
    # most windows per call: past this the arrays leave the CPU caches (batch 512 at N=50 served ~8.7k windows/s
    # against ~11.8k for 256, `python -m benchmarks predictor`)
    max_rows = 256

    def __init__(self, network: NumpyNetwork, gap_scale: float, k: int, with_copy: bool,
                 lengths: Sequence[int]) -> None:
        self.network, self.gap_scale, self.k, self.with_copy = network, gap_scale, k, with_copy
        self.lengths = tuple(lengths)

    def length_buckets(self) -> Sequence[int]:
        return self.lengths

    def shape_for(self, rows: int, length: int) -> tuple[int, int]:
        return rows, length

    def warm(self, shapes: Sequence[tuple[int, int]] | None = None) -> float:
        return 0.0

    def shapes_to_compile(self) -> list[tuple[int, int]]:
        return []

    def __call__(self, shape: tuple[int, int], *columns: np.ndarray) -> tuple[np.ndarray, ...]:
        return serve_columns(self.network, self.gap_scale, self.k, *columns, with_copy=self.with_copy)
