"""Session-based kNN (V-SKNN): the next category from the training sessions most like the user's window.

The strongest simple family in published comparisons of session recommenders (Ludewig et al. 2021): a window
is compared with the recent training sessions that hold its newest category; each session's similarity is the
sum, over the categories it shares with the window, of their position weight in the window (linear: the
newest event weighs 1, the one ``n`` steps back ``1 - n / SCOPE``); the ``NEIGHBOURS`` most similar sessions
vote for each of their categories with their similarity.

Stored in the artifact as the sessions' distinct categories (codes into a vocabulary, newest session last);
the per-category index of the ``SAMPLE`` most recent sessions holding it is rebuilt at load. Scoring a window
is a handful of NumPy calls over at most ``SAMPLE`` sessions.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

SAMPLE = 500  # most recent sessions holding the window's newest category: the neighbour candidates
NEIGHBOURS = 100  # the most similar of them vote
SCOPE = 10  # the window's newest events that weigh in the similarity
MAX_SESSIONS = 200_000  # most recent training sessions kept in the artifact
TOP = 20  # categories a window's score keeps (the mix's candidates)


@dataclasses.dataclass
class SessionKnn:
    vocabulary: list[str]
    items: np.ndarray  # (total,) int32 category codes, session after session
    ends: np.ndarray  # (sessions,) int64 end of each session in ``items``, oldest session first
    _code: dict[str, int] = dataclasses.field(init=False, repr=False)
    _holding: list[np.ndarray] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int32)
        self.ends = np.asarray(self.ends, dtype=np.int64)
        self._code = {c: i for i, c in enumerate(self.vocabulary)}
        owner = np.repeat(np.arange(len(self.ends), dtype=np.int64), np.diff(self.ends, prepend=0))
        order = np.lexsort((-owner, self.items))  # by category, newest session first
        codes, sessions = self.items[order], owner[order]
        bounds = np.searchsorted(codes, np.arange(len(self.vocabulary) + 1))
        self._holding = [sessions[a: min(b, a + SAMPLE)] for a, b in zip(bounds[:-1], bounds[1:])]
        self._starts = self.ends - np.diff(self.ends, prepend=0)

    @classmethod
    def fit(cls, categories: np.ndarray, session: np.ndarray, session_end_ms: np.ndarray,
            max_sessions: int = MAX_SESSIONS) -> SessionKnn:
        """Sessions from events (category, session number) of the fit part; ``session_end_ms`` orders them.

        A session keeps its distinct categories; sessions with fewer than two are dropped (they vote only for
        the category that found them); the ``max_sessions`` most recent are kept.
        """
        vocabulary, codes = np.unique(categories.astype(str), return_inverse=True)
        pairs = np.unique(np.stack([session.astype(np.int64), codes.astype(np.int64)]), axis=1)
        sess, cat = pairs
        ids, first, size = np.unique(sess, return_index=True, return_counts=True)
        keep = size >= 2
        ids, first, size = ids[keep], first[keep], size[keep]
        order = np.argsort(session_end_ms[ids], kind="stable")[-max_sessions:]  # oldest first
        chunks = [cat[first[i]: first[i] + size[i]] for i in order]
        used, items = np.unique(np.concatenate(chunks) if chunks else np.zeros(0, np.int64), return_inverse=True)
        return cls(vocabulary=[str(c) for c in vocabulary[used]], items=items.astype(np.int32),
                   ends=np.cumsum(size[order]))

    def _gather(self, sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The categories of ``sessions`` as one array, and for each the index of its session in ``sessions``."""
        lengths = self.ends[sessions] - self._starts[sessions]
        offsets = np.repeat(self._starts[sessions] - (np.cumsum(lengths) - lengths), lengths)
        return self.items[offsets + np.arange(offsets.size)], np.repeat(np.arange(len(sessions)), lengths)

    def scores(self, window: Sequence[str], top: int = TOP) -> dict[str, float]:
        """Votes of the most similar sessions for each category, the ``top`` best (empty: no neighbour)."""
        code = self._code
        last = code.get(window[-1]) if len(window) else None
        if last is None:
            return {}
        weight: dict[int, float] = {}
        recent = window[-SCOPE:]
        for step, c in enumerate(recent, start=SCOPE - len(recent) + 1):  # newest: SCOPE / SCOPE
            i = code.get(c)
            if i is not None:
                weight[i] = step / SCOPE
        candidates = self._holding[last]
        items, owner = self._gather(candidates)
        known = np.fromiter(weight, dtype=np.int32, count=len(weight))
        order = np.argsort(known)
        known, w = known[order], np.fromiter(weight.values(), dtype=np.float64, count=len(weight))[order]
        at = np.minimum(np.searchsorted(known, items), len(known) - 1)
        shared = known[at] == items
        similarity = np.bincount(owner[shared], weights=w[at[shared]], minlength=len(candidates))
        if len(candidates) > NEIGHBOURS:
            best = np.argpartition(-similarity, NEIGHBOURS - 1)[:NEIGHBOURS]
        else:
            best = np.arange(len(candidates))
        items, voter = self._gather(candidates[best])
        cats, slot = np.unique(items, return_inverse=True)
        votes = np.bincount(slot, weights=similarity[best][voter])
        chosen = np.argsort(-votes, kind="stable")[:top]
        vocabulary = self.vocabulary
        return {vocabulary[cats[j]]: round(float(votes[j]), 6) for j in chosen}

    def to_json(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary, "items": self.items.tolist(), "ends": self.ends.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionKnn:
        return cls(vocabulary=[str(c) for c in data["vocabulary"]], items=np.asarray(data["items"], np.int32),
                   ends=np.asarray(data["ends"], np.int64))

    @classmethod
    def empty(cls) -> SessionKnn:
        return cls(vocabulary=[], items=np.zeros(0, np.int32), ends=np.zeros(0, np.int64))
