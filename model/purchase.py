"""The served purchase probability: the network's purchase head, calibrated, with the session signals that
carry purchase intent.

A logistic regression (the purchase *stage*) over the logit of the head's probability and the window's
purchase signals (:data:`FEATURES`: categories carted and not bought since, how often the newest category
was seen, time since the session's first cart, dwell between events, session length, ...). ``clickstream
train`` fits it on the validation slice, which the network never trained on, with its L2 strength chosen by
cross-validation there; a stage over the head's logit alone is Platt scaling, one of the candidates. Its
output is a probability in the sense that among windows scored ~0.2, about a fifth are followed by a purchase
within the horizon (the evaluation report's reliability curve and Brier score check that on the test slice),
so the audiences' threshold means a probability.

Everything is NumPy over the (B, T) window columns the predictor already builds (``features.window_columns``):
no framework at serving, identical in both runtimes.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from core.events import EVENT_TYPE_CODES
from model.data import SESSION_GAP_MS
from model.features import PAD

# event type inputs of window_columns: position in EVENT_TYPES + 1 (0 = padding)
CART, BUY, FAV = (EVENT_TYPE_CODES[name] + 1 for name in ("cart", "purchase", "fav"))
TIME_SCALE = 10.0  # seconds enter as log1p(seconds) / TIME_SCALE, like the network's gap features
FEATURES = (
    "head_logit",  # logit of the network's purchase head
    "session_events", "window_events",  # log1p counts; the session: the newest events with gaps <= 30 min
    "session_carts", "session_purchases", "session_favs", "window_carts", "window_purchases",
    "open_carts",  # distinct categories carted in the window and not purchased after their newest cart
    "newest_open_cart",  # the newest event's category is one of them
    "since_first_session_cart", "since_newest_cart",  # scaled log1p seconds, 0 without a cart
    "steps_since_newest_cart",  # log1p steps, 0 without a cart
    "last_dwell", "mean_session_dwell", "session_duration", "window_duration",  # scaled log1p seconds
    "newest_seen_window", "newest_seen_session",  # log1p times the newest category occurs
    "session_categories",  # log1p distinct categories in the session
    "newest_is_cart", "newest_is_purchase", "newest_is_fav",
)
STRENGTHS = (0.01, 0.1, 1.0)  # C of the L2 penalty sum(loss) + |w|^2 / (2C), chosen by cross-validation
FOLDS = 2


def _seconds(ms: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(ms, 0) / 1000.0) / TIME_SCALE


def purchase_features(code: np.ndarray, event_type: np.ndarray, time_ms: np.ndarray) -> np.ndarray:
    """(B, len(FEATURES) - 1) purchase signals of left-padded windows (everything but the head's logit).

    ``code``: equal integers exactly for equal categories; ``event_type``: 0 at padding, else the position in
    ``EVENT_TYPES`` + 1; ``time_ms``: event times. The newest event is the last column of every row.
    """
    b, t = event_type.shape
    valid = event_type != PAD
    steps = np.arange(t)
    newest_time = time_ms[:, -1:]
    brk = np.zeros((b, t), dtype=bool)  # the event starts a new session
    brk[:, 1:] = valid[:, 1:] & valid[:, :-1] & (time_ms[:, 1:] - time_ms[:, :-1] > SESSION_GAP_MS)
    start = np.maximum(np.where(brk, steps, -1).max(axis=1), t - valid.sum(axis=1))
    session = valid & (steps >= start[:, None])
    cart, buy, fav = (event_type == CART), (event_type == BUY), (event_type == FAV)
    runs = _Runs(code)
    # the newest cart of a category not bought since
    open_cart = cart & (runs.later_count(buy) == 0) & (runs.later_count(cart) == 0)
    newest_code = code[:, -1:]
    n_session = session.sum(axis=1)
    session_time = np.where(session, time_ms, np.iinfo(np.int64).max).min(axis=1)
    first_cart = np.where(cart & session, time_ms, np.iinfo(np.int64).max).min(axis=1)
    newest_cart_step = np.where(cart, steps, -1).max(axis=1)
    has_cart = newest_cart_step >= 0
    newest_cart_time = np.take_along_axis(time_ms, np.maximum(newest_cart_step, 0)[:, None], axis=1)[:, 0]
    first_time = np.where(valid, time_ms, np.iinfo(np.int64).max).min(axis=1)
    last_gap = np.where(valid[:, -2], time_ms[:, -1] - time_ms[:, -2], 0) if t > 1 else np.zeros(b, np.int64)
    duration = newest_time[:, 0] - session_time
    has_session_cart = (cart & session).any(axis=1)
    columns = [
        np.log1p(n_session), np.log1p(valid.sum(axis=1)),
        np.log1p((cart & session).sum(axis=1)), np.log1p((buy & session).sum(axis=1)),
        np.log1p((fav & session).sum(axis=1)), np.log1p(cart.sum(axis=1)), np.log1p(buy.sum(axis=1)),
        np.log1p(open_cart.sum(axis=1)), (open_cart & (code == newest_code)).any(axis=1),
        np.where(has_session_cart, _seconds(newest_time[:, 0] - first_cart), 0.0),
        np.where(has_cart, _seconds(newest_time[:, 0] - newest_cart_time), 0.0),
        np.where(has_cart, np.log1p(t - 1 - newest_cart_step), 0.0),
        _seconds(last_gap), _seconds(duration / np.maximum(n_session - 1, 1)), _seconds(duration),
        _seconds(newest_time[:, 0] - first_time),
        np.log1p(((code == newest_code) & valid).sum(axis=1)),
        np.log1p(((code == newest_code) & session).sum(axis=1)),
        np.log1p(runs.distinct(session)),
        event_type[:, -1] == CART, event_type[:, -1] == BUY, event_type[:, -1] == FAV,
    ]
    return np.stack(columns, axis=1).astype(np.float64)


class _Runs:
    """The steps of each row grouped by category: a stable sort of the codes puts equal ones together in time
    order (as ``features._repetitions`` does), so questions about the same category are sums over a run."""

    def __init__(self, code: np.ndarray) -> None:
        self.shape = code.shape
        self.order = np.argsort(code, axis=1, kind="stable")
        ordered = np.take_along_axis(code, self.order, axis=1)
        starts = np.ones(code.shape, dtype=bool)
        starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # every row starts a run
        self.run = np.cumsum(starts.ravel()) - 1
        self.last = np.r_[np.flatnonzero(starts.ravel())[1:], starts.size] - 1  # each run's last position
        self.row = np.flatnonzero(starts.ravel()) // code.shape[1]

    def _sorted(self, flag: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flag, self.order, axis=1).ravel().astype(np.int64)

    def later_count(self, flag: np.ndarray) -> np.ndarray:
        """(B, T): how many later steps of the same category have ``flag``."""
        inclusive = np.cumsum(self._sorted(flag))
        later = (inclusive[self.last[self.run]] - inclusive).reshape(self.shape)
        out = np.empty_like(later)
        np.put_along_axis(out, self.order, later, axis=1)
        return out

    def distinct(self, flag: np.ndarray) -> np.ndarray:
        """(B,): distinct categories among the steps with ``flag``."""
        present = np.bincount(self.run, weights=self._sorted(flag)) > 0
        return np.bincount(self.row[present], minlength=self.shape[0])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def fit_logistic(x: np.ndarray, y: np.ndarray, strength: float, iterations: int = 50) -> tuple[np.ndarray, float]:
    """Weights and intercept minimising sum(log loss) + |w|^2 / (2 * strength) (the intercept not penalised),
    by Newton's method with step halving: the objective is convex and the problem a few dozen columns wide."""
    n, f = x.shape
    design = np.c_[x, np.ones(n)]
    penalty = np.full(f + 1, 1.0 / strength)
    penalty[-1] = 0.0

    def objective(w: np.ndarray) -> float:
        z = design @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * w * w))

    w = np.zeros(f + 1)
    w[-1] = _logit(np.array([min(max(y.mean(), 1e-4), 1 - 1e-4)]))[0]
    current = objective(w)
    for _ in range(iterations):
        p = _sigmoid(design @ w)
        gradient = design.T @ (p - y) + penalty * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6 and objective(w - size * step) > current:  # a full step can overshoot
            size /= 2
        w -= size * step
        previous, current = current, objective(w)
        if previous - current < 1e-10 * max(1.0, abs(current)):
            break
    return w[:-1], float(w[-1])


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclasses.dataclass
class PurchaseStage:
    """``p = sigmoid(intercept + coef . (x - mean) / scale)`` over the columns ``features`` (a prefix of
    :data:`FEATURES`: the head's logit alone is Platt scaling)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    strength: float
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, head: np.ndarray, code: np.ndarray, event_type: np.ndarray,
                 time_ms: np.ndarray) -> np.ndarray:
        """The served probability of each window, from the head's probability and the window columns."""
        x = _logit(head)[:, None]
        if len(self.features) > 1:
            x = np.c_[x, purchase_features(code, event_type, time_ms)[:, : len(self.features) - 1]]
        return _sigmoid((x - self.mean) / self.scale @ self.coef + self.intercept).astype(np.float32)

    @classmethod
    def fit(cls, head: np.ndarray, signals: np.ndarray, bought: np.ndarray, seed: int = 0) -> PurchaseStage:
        """Choose, by ``FOLDS``-fold cross-validated log loss on these (validation) windows, between Platt
        scaling and the stage over every feature at each of ``STRENGTHS``; then fit the choice on all of them.

        ``signals``: :func:`purchase_features` of the windows; ``bought``: 1 where the user purchased within
        the horizon.
        """
        y = bought.astype(np.float64)
        full = np.c_[_logit(head), signals]
        candidates = [(1, 1e6)] + [(full.shape[1], c) for c in STRENGTHS]
        fold = np.random.default_rng(seed).integers(0, FOLDS, len(y))
        scores = {}
        for width, strength in candidates:
            losses = []
            for k in range(FOLDS):
                train, test = fold != k, fold == k
                if y[train].min() == y[train].max():  # one class only: nothing to learn
                    continue
                stage = cls._fit_on(full[train, :width], y[train], strength, FEATURES[:width])
                losses.append(log_loss(y[test], stage._apply(full[test, :width])))
            scores[(width, strength)] = float(np.mean(losses)) if losses else float("inf")
        width, strength = min(scores, key=scores.__getitem__)
        stage = cls._fit_on(full[:, :width], y, strength, FEATURES[:width])
        stage.validation = {"windows": int(len(y)), "purchases": int(y.sum()),
                            "cross_validated_log_loss": {("platt" if w == 1 else f"signals C={c:g}"): round(v, 5)
                                                         for (w, c), v in scores.items()}}
        return stage

    @classmethod
    def _fit_on(cls, x: np.ndarray, y: np.ndarray, strength: float, names: tuple[str, ...]) -> PurchaseStage:
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        coef, intercept = fit_logistic((x - mean) / scale, y, strength)
        return cls(names, mean, scale, coef, intercept, strength)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid((x - self.mean) / self.scale @ self.coef + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.round(6).tolist(),
                "scale": self.scale.round(6).tolist(), "coef": self.coef.round(6).tolist(),
                "intercept": round(self.intercept, 6), "strength": self.strength, "validation": self.validation}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PurchaseStage:
        features = tuple(data["features"])
        if features != FEATURES[: len(features)]:
            raise ValueError(f"purchase stage features {list(features)} are not the ones this code computes")
        arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
        if any(a.shape != (len(features),) for a in arrays):
            raise ValueError("purchase stage: mean, scale and coef must have one value per feature")
        return cls(features, *arrays, intercept=float(data["intercept"]), strength=float(data["strength"]),
                   validation=dict(data.get("validation") or {}))
