"""The final next-category ranking: the network's distribution mixed with the stored simple signals.

Each candidate category (the network's top ones, the window's own categories, the Markov successors and
co-occurrence neighbours of the newest ones) gets five scores, each a distribution over the candidates:

- ``network``: the network's probability (generator + pointer, out-of-vocabulary window categories included);
- ``markov``: P(candidate | newest category) from the stored transitions;
- ``neighbours``: item-kNN similarity to the newest categories, normalised to sum 1;
- ``recency``: recency-weighted frequency in the window (the tuned decay), normalised to sum 1;
- ``last``: 1 for the newest category;
- ``sessions``: session kNN votes (:mod:`model.session_knn`), normalised to sum 1.

The ranking score is ``sum_i w_i * score_i`` with weights (summing to 1) chosen on the validation slice at
training time (the best HR@1 + HR@5 + MRR@10) and stored in ``baselines.json``. With all weight on one signal
the mix ranks like that
baseline (or the network alone), so the validation slice picks a mix that is at least as good as each of them.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.baselines import StoredBaselines
from model.metrics import ranking_metrics

COMPONENTS = ("network", "markov", "neighbours", "recency", "last", "sessions")
GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0)
NETWORK_ONLY = {"network": 1.0}


def _normalised(scores: dict[str, float]) -> dict[str, float]:
    total = sum(scores.values())
    return {c: v / total for c, v in scores.items()} if total > 0 else {}


def candidate_scores(baselines: StoredBaselines, window: Sequence[str],
                     network_top: Sequence[tuple[str, float]]) -> tuple[list[str], np.ndarray]:
    """Candidates (network's first, then the others in a fixed order) and their (n, 6) COMPONENTS scores."""
    last = window[-1]
    signals = [dict(network_top), dict(baselines.markov.get(last, ())),
               _normalised(baselines.knn_scores(window)),
               _normalised(baselines.recency_scores(window, baselines.decay)), {last: 1.0},
               _normalised(baselines.sessions.scores(window))]
    candidates = list(dict.fromkeys(itertools.chain.from_iterable(signals)))
    table = np.zeros((len(candidates), len(COMPONENTS)), dtype=np.float32)
    position = {c: i for i, c in enumerate(candidates)}
    for j, signal in enumerate(signals):
        for c, v in signal.items():
            table[position[c], j] = v
    return candidates, table


def weight_vector(weights: dict[str, float]) -> np.ndarray:
    w = np.array([float(weights.get(name, 0.0)) for name in COMPONENTS], dtype=np.float32)
    return w / w.sum() if w.sum() > 0 else np.eye(len(COMPONENTS), dtype=np.float32)[0]


def rank(baselines: StoredBaselines, window: Sequence[str], network_top: Sequence[tuple[str, float]],
         k: int, weights: dict[str, float] | None = None) -> list[tuple[str, float]]:
    """The ``k`` best candidates by the mixed score (ties: the earlier candidate first, as in MixTuner).

    Plain dictionaries rather than :func:`candidate_scores`' table (the predictor calls this once per window),
    filled in the same candidate order, so that ties fall as they did when the weights were chosen. Session
    kNN, the costliest signal and the last, is skipped when it has no weight.
    """
    w = weight_vector(baselines.mix if weights is None else weights).tolist()
    last = window[-1]
    signals: list[Any] = [network_top, baselines.markov.get(last, ()),
                          _normalised(baselines.knn_scores(window)).items(),
                          _normalised(baselines.recency_scores(window, baselines.decay)).items(), ((last, 1.0),),
                          _normalised(baselines.sessions.scores(window)).items() if w[-1] > 0 else ()]
    score: dict[str, float] = {}
    for weight, signal in zip(w, signals):
        for c, v in signal:
            score[c] = score.get(c, 0.0) + weight * v
    best = sorted(score.items(), key=lambda kv: -kv[1])[:k]  # stable: insertion order breaks ties
    if len(best) < k:
        taken = {c for c, _ in best}
        best += [(c, 0.0) for c, _ in baselines.popular if c not in taken][: k - len(best)]
    return best


class MixTuner:
    """Validation windows as padded candidate tables, to score many weightings fast."""

    def __init__(self, baselines: StoredBaselines, windows: Sequence[Sequence[str]],
                 network_tops: Sequence[Sequence[tuple[str, float]]], truth: Sequence[str]) -> None:
        rows = [candidate_scores(baselines, w, top) for w, top in zip(windows, network_tops)]
        width = max((len(c) for c, _ in rows), default=1)
        self.table = np.zeros((len(rows), width, len(COMPONENTS)), dtype=np.float32)
        self.valid = np.zeros((len(rows), width), dtype=bool)
        self.truth = np.full(len(rows), -1, dtype=np.int64)
        for i, ((candidates, table), true) in enumerate(zip(rows, truth)):
            self.table[i, : len(candidates)] = table
            self.valid[i, : len(candidates)] = True
            if true in candidates:
                self.truth[i] = candidates.index(true)

    def ranks(self, weights: dict[str, float]) -> np.ndarray:
        """1-based rank of the truth under these weights, 0 where it is not a candidate."""
        score = np.where(self.valid, self.table @ weight_vector(weights), -np.inf)
        found = self.truth >= 0
        true_score = np.take_along_axis(score, np.maximum(self.truth, 0)[:, None], axis=1)
        before = np.arange(score.shape[1])[None, :] < self.truth[:, None]
        rank = 1 + np.sum(score > true_score, axis=1) + np.sum((score == true_score) & before, axis=1)
        return np.where(found, rank, 0)

    def objective(self, weights: dict[str, float]) -> float:
        m = ranking_metrics(self.ranks(weights))
        return m["hr@1"] + m["hr@5"] + m["mrr@10"]

    def tune(self, passes: int = 3) -> dict[str, float]:
        """Coordinate ascent over GRID from the network alone and from each single signal; the best wins."""
        best_w, best = dict(NETWORK_ONLY), self.objective(NETWORK_ONLY)
        for start in COMPONENTS:
            w = {name: 1.0 if name == start else 0.0 for name in COMPONENTS}
            value = self.objective(w)
            for _ in range(passes):
                improved = False
                for name in COMPONENTS:
                    for g in GRID:
                        trial = {**w, name: g}
                        if sum(trial.values()) <= 0:
                            continue
                        v = self.objective(trial)
                        if v > value + 1e-9:
                            w, value, improved = trial, v, True
                if not improved:
                    break
            if value > best + 1e-9:
                best_w, best = w, value
        total = sum(best_w.values())
        return {name: round(best_w.get(name, 0.0) / total, 4) for name in COMPONENTS}
