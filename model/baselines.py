"""Simple next-category methods, fit at training time and stored in the artifact.

:class:`StoredBaselines` is first fit by ``clickstream train`` on the events before the validation slice (the
network's training data); its recency decay and the mix weights are chosen on the validation slice; then the
counts are fit again, with those choices kept, on every event before the test slice (``train --final``: on the
whole log) and written to ``baselines.json`` beside the manifest. ``clickstream evaluate`` only reads it back,
so on the test slice (``--split time``) or on a log the model never saw (``--split none``) no baseline has seen
the targets it is scored on. The same object scores the candidates that the predictor mixes with the network's
distribution (:mod:`model.mix`): one definition for both.

Every method ranks the categories of a window (raw ids, oldest first) and fills lists shorter than ``k`` with
the most popular categories.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.events import EVENT_TYPE_CODES
from model.artifact import BASELINES
from model.data import SESSION_GAP_MS, EventLog
from model.metrics import ranking_metrics, ranks
from model.purchase import PurchaseStage
from model.session_knn import SessionKnn

BASELINES_FORMAT = 3  # 3: the purchase stage; 2: session kNN; formats 1 and 2 (without them) still load
DECAYS = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)
KNN_REACH = 5  # co-occurrence counts pairs of events at most this many steps apart in a session
KNN_RECENT = 3  # item-kNN scores the neighbours of the window's newest distinct categories


@dataclasses.dataclass
class StoredBaselines:
    """Popularity, first-order Markov transitions, item co-occurrence neighbours and the sessions of session
    kNN (:mod:`model.session_knn`), counted on the events a fit mask allows.

    ``markov[c]``: the ``k`` most frequent next categories after ``c`` with P(next | c). ``neighbours[c]``:
    the ``k`` categories most often seen within ``KNN_REACH`` steps of ``c`` in a session, scored by
    co-occurrences / sqrt(frequency of c * frequency of the neighbour) (cosine-like; a pair counts once per
    distance at which it occurs, so it can exceed 1). ``decay``: the recency-frequency decay that ranked the
    validation slice best.
    """

    popular: list[tuple[str, float]]
    markov: dict[str, list[tuple[str, float]]]
    neighbours: dict[str, list[tuple[str, float]]]
    decay: float = 0.8
    k: int = 20
    fitted_on: str = ""
    mix: dict[str, float] = dataclasses.field(default_factory=dict)  # weights of model.mix, tuned in training
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)
    # factors of the next-event-type decision argmax(p * w), chosen on validation (model.metrics.tune_class_weights)
    event_type_weights: list[float] = dataclasses.field(default_factory=list)
    sessions: SessionKnn = dataclasses.field(default_factory=SessionKnn.empty)
    # the served purchase probability (model.purchase), fit on validation; None: the network's head as it is
    purchase: PurchaseStage | None = None

    @classmethod
    def fit(cls, log: EventLog, fit_mask: np.ndarray, k: int = 20, fitted_on: str = "") -> StoredBaselines:
        """Count popularity, transitions and co-occurrences among the events where ``fit_mask`` is true."""
        cats = log.category_ids
        counts = Counter(cats[fit_mask].tolist())
        total = max(sum(counts.values()), 1)
        popular = [(c, round(n / total, 5)) for c, n in counts.most_common(k)]
        codes, code_cat = _codes(cats)
        same_user = np.ones(len(log), dtype=bool)
        same_user[log.user_starts[:-1]] = False  # event i follows event i-1 of the same user
        new_session = ~same_user
        if len(log) > 1:
            new_session[1:] |= np.diff(log.times_ms) > SESSION_GAP_MS
        session = np.cumsum(new_session)
        idx = np.flatnonzero(fit_mask[1:] & fit_mask[:-1] & same_user[1:]) + 1
        transitions = _top_pairs(codes[idx - 1], codes[idx], code_cat, k, normalise="row")
        left, right = [], []
        for d in range(1, KNN_REACH + 1):
            a = np.arange(len(log) - d)
            ok = fit_mask[a] & fit_mask[a + d] & (session[a] == session[a + d]) & (codes[a] != codes[a + d])
            left.append(codes[a[ok]])
            right.append(codes[a[ok] + d])
        lo, hi = np.concatenate(left + right), np.concatenate(right + left)  # symmetric
        freq = np.bincount(codes[fit_mask], minlength=len(code_cat)).astype(np.float64)
        neighbours = _top_pairs(lo, hi, code_cat, k, normalise="cosine", freq=freq)
        session_end = np.zeros(int(session[-1]) + 1 if len(log) else 1, dtype=np.int64)
        np.maximum.at(session_end, session[fit_mask], log.times_ms[fit_mask])
        sessions = SessionKnn.fit(cats[fit_mask], session[fit_mask], session_end)
        return cls(popular=popular, markov=transitions, neighbours=neighbours, k=k, fitted_on=fitted_on,
                   sessions=sessions)

    def refit(self, log: EventLog, fit_mask: np.ndarray, fitted_on: str) -> StoredBaselines:
        """The same choices (decay, mix weights, class factors, validation record) over counts of other events:
        what training serves once the choices are made on validation (counts of all the history it may use)."""
        fresh = StoredBaselines.fit(log, fit_mask, k=self.k, fitted_on=fitted_on)
        return dataclasses.replace(fresh, decay=self.decay, mix=dict(self.mix), validation=self.validation,
                                   event_type_weights=list(self.event_type_weights), purchase=self.purchase)

    # --- the methods, each window -> ranked categories -------------------------------------------------

    def _fill(self, ranked: list[str], k: int = 10) -> list[str]:
        if len(ranked) >= k:
            return ranked[:k]
        seen = set(ranked)
        return ranked + [c for c, _ in self.popular if c not in seen][: k - len(ranked)]

    def most_popular(self, window: Sequence[str], k: int = 10) -> list[str]:
        return [c for c, _ in self.popular[:k]]

    def repeat_last(self, window: Sequence[str], k: int = 10) -> list[str]:
        return self._fill([window[-1]], k)

    def markov_chain(self, window: Sequence[str], k: int = 10) -> list[str]:
        return self._fill([c for c, _ in self.markov.get(window[-1], [])], k)

    def last_then_markov(self, window: Sequence[str], k: int = 10) -> list[str]:
        last = window[-1]
        return self._fill([last] + [c for c, _ in self.markov.get(last, []) if c != last], k)

    def recency_frequency(self, window: Sequence[str], k: int = 10, decay: float | None = None) -> list[str]:
        score = self.recency_scores(window, self.decay if decay is None else decay)
        return self._fill(sorted(score, key=score.__getitem__, reverse=True), k)

    def item_knn(self, window: Sequence[str], k: int = 10) -> list[str]:
        score = self.knn_scores(window)
        return self._fill(sorted(score, key=score.__getitem__, reverse=True), k)

    def session_knn(self, window: Sequence[str], k: int = 10) -> list[str]:
        return self._fill(list(self.sessions.scores(window)), k)

    def methods(self) -> dict[str, Callable[[Sequence[str]], list[str]]]:
        """The baseline rows of the evaluation report, by name."""
        return {"most_popular": self.most_popular, "repeat_last": self.repeat_last, "markov": self.markov_chain,
                "last_then_markov": self.last_then_markov,
                f"recency_frequency(decay={self.decay})": self.recency_frequency, "item_knn": self.item_knn,
                "session_knn": self.session_knn}

    # --- scores (also the mix's candidate features) -----------------------------------------------------

    @staticmethod
    def recency_scores(window: Sequence[str], decay: float) -> dict[str, float]:
        """sum over the window's occurrences of c of decay**(steps before the newest event)."""
        score: dict[str, float] = {}
        weight = 1.0
        for c in reversed(window):
            score[c] = score.get(c, 0.0) + weight
            weight *= decay
        return score

    def knn_scores(self, window: Sequence[str]) -> dict[str, float]:
        """Similarity to the window's newest ``KNN_RECENT`` distinct categories, the newest weighing most."""
        score: dict[str, float] = {}
        seen: set[str] = set()
        weight = 1.0
        for c in reversed(window):
            if c in seen:
                continue
            seen.add(c)
            for n, sim in self.neighbours.get(c, ()):
                score[n] = score.get(n, 0.0) + weight * sim
            weight *= 0.5
            if len(seen) == KNN_RECENT:
                break
        return score

    def tune_decay(self, windows: Sequence[Sequence[str]], truth: Sequence[str]) -> float:
        """Set ``decay`` to the one of DECAYS with the best MRR@10 on these (validation) windows."""
        if windows:
            scored = {d: ranking_metrics(ranks([self.recency_frequency(w, decay=d) for w in windows],
                                               truth))["mrr@10"] for d in DECAYS}
            self.decay = max(scored, key=scored.__getitem__)
        return self.decay

    # --- storage ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def pairs(rows: list[tuple[str, float]]) -> list[list[Any]]:
            return [[c, round(p, 5)] for c, p in rows]

        return {"format": BASELINES_FORMAT, "k": self.k, "decay": self.decay, "fitted_on": self.fitted_on,
                "popular": pairs(self.popular), "mix": self.mix, "validation": self.validation,
                "event_type_weights": self.event_type_weights,
                "markov": {c: pairs(v) for c, v in sorted(self.markov.items())},
                "neighbours": {c: pairs(v) for c, v in sorted(self.neighbours.items())},
                "sessions": self.sessions.to_json(),
                "purchase": self.purchase.to_json() if self.purchase else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredBaselines:
        if data.get("format") not in range(1, BASELINES_FORMAT + 1):
            raise ValueError(f"baselines format {data.get('format')}, this code reads 1 to {BASELINES_FORMAT}")

        def pairs(rows: list[list[Any]]) -> list[tuple[str, float]]:
            return [(str(c), float(p)) for c, p in rows]

        return cls(popular=pairs(data["popular"]), markov={c: pairs(v) for c, v in data["markov"].items()},
                   neighbours={c: pairs(v) for c, v in data["neighbours"].items()}, decay=float(data["decay"]),
                   k=int(data["k"]), fitted_on=str(data.get("fitted_on", "")), mix=dict(data.get("mix") or {}),
                   validation=dict(data.get("validation") or {}),
                   event_type_weights=[float(w) for w in data.get("event_type_weights") or []],
                   sessions=SessionKnn.from_json(data["sessions"]) if "sessions" in data else SessionKnn.empty(),
                   purchase=PurchaseStage.from_json(data["purchase"]) if data.get("purchase") else None)

    def save(self, folder: Path) -> Path:
        path = folder / BASELINES
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, folder: Path) -> StoredBaselines:
        return cls.from_json(json.loads((folder / BASELINES).read_text()))


def _codes(cats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(cats, return_inverse=True)
    return inverse.astype(np.int64), uniq


def _top_pairs(a: np.ndarray, b: np.ndarray, code_cat: np.ndarray, k: int, normalise: str,
               freq: np.ndarray | None = None) -> dict[str, list[tuple[str, float]]]:
    """For each code in ``a``: its ``k`` most frequent partners in ``b``, scored by row share or cosine."""
    out: dict[str, list[tuple[str, float]]] = {}
    if len(a) == 0:
        return out
    n = len(code_cat)
    pair, count = np.unique(a * n + b, return_counts=True)
    left, right = pair // n, pair % n
    row_total = np.bincount(left, weights=count, minlength=n)
    if normalise == "row":
        score = count / row_total[left]
    else:
        assert freq is not None
        score = count / np.sqrt(np.maximum(freq[left] * freq[right], 1.0))
    order = np.lexsort((-score, left))  # by left code, best partner first
    left, right, score = left[order], right[order], score[order]
    starts = np.flatnonzero(np.r_[True, left[1:] != left[:-1]])
    ends = np.r_[starts[1:], len(left)]
    for s, e in zip(starts, ends):
        e = min(e, s + k)
        out[str(code_cat[left[s]])] = [(str(code_cat[r]), round(float(v), 5)) for r, v in zip(right[s:e], score[s:e])]
    return out


def recent_cart_score(event_types: np.ndarray, decay: float = 0.7) -> float:
    """Purchase baseline: decay**(steps since the newest cart event), 0 without a cart in the window."""
    carts = np.flatnonzero(event_types == EVENT_TYPE_CODES["cart"])
    if len(carts) == 0:
        return 0.0
    return float(decay ** (len(event_types) - 1 - carts[-1]))

