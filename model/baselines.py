"""Honest baselines for next category, next event type and purchase, fit on the training events only."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from core.events import EVENT_TYPE_CODES
from model.data import EventLog


class CategoryBaselines:
    """Most popular, repeat last, first-order Markov, and the user's own categories by recency-weighted frequency.

    Each ranks 10 categories; lists shorter than 10 are filled with the most popular categories.
    """

    def __init__(self, log: EventLog, fit_mask: np.ndarray, k: int = 10, decay: float = 0.8) -> None:
        self.k, self.decay = k, decay
        cats = log.category_ids
        self.popular = [c for c, _ in Counter(cats[fit_mask].tolist()).most_common(k)]
        transitions: dict[str, Counter[str]] = defaultdict(Counter)
        idx = np.flatnonzero(fit_mask[1:] & fit_mask[:-1]) + 1
        same_user = np.ones(len(log), dtype=bool)
        same_user[log.user_starts[:-1]] = False
        for i in idx[same_user[idx]]:
            transitions[cats[i - 1]][cats[i]] += 1
        self.markov = {prev: [c for c, _ in nxt.most_common(k)] for prev, nxt in transitions.items()}

    def _fill(self, ranked: list[str]) -> list[str]:
        if len(ranked) >= self.k:
            return ranked[: self.k]
        seen = set(ranked)
        return ranked + [c for c in self.popular if c not in seen][: self.k - len(ranked)]

    def most_popular(self, window: Sequence[str]) -> list[str]:
        return list(self.popular)

    def repeat_last(self, window: Sequence[str]) -> list[str]:
        return self._fill([window[-1]])

    def markov_chain(self, window: Sequence[str]) -> list[str]:
        return self._fill(list(self.markov.get(window[-1], [])))

    def recency_frequency(self, window: Sequence[str], decay: float | None = None) -> list[str]:
        decay = self.decay if decay is None else decay
        score: dict[str, float] = {}
        weight = 1.0
        for c in reversed(window):
            score[c] = score.get(c, 0.0) + weight
            weight *= decay
        return self._fill(sorted(score, key=score.__getitem__, reverse=True))


def recent_cart_score(event_types: np.ndarray, decay: float = 0.7) -> float:
    """Purchase baseline: decay**(steps since the newest cart event), 0 without a cart in the window."""
    carts = np.flatnonzero(event_types == EVENT_TYPE_CODES["cart"])
    if len(carts) == 0:
        return 0.0
    return float(decay ** (len(event_types) - 1 - carts[-1]))
