"""Ranking, classification and probability metrics in plain numpy."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks(top: Sequence[Sequence[str]], truth: Sequence[str]) -> np.ndarray:
    """1-based rank of each true category in its ranked list, 0 where it is absent."""
    out = np.zeros(len(truth), dtype=np.int64)
    for i, (ranked, true) in enumerate(zip(top, truth)):
        for r, c in enumerate(ranked, start=1):
            if c == true:
                out[i] = r
                break
    return out


def ranking_metrics(rank: np.ndarray) -> dict[str, float]:
    """HR@1/5/10 and MRR@10 from 1-based ranks (0 = not in the list)."""
    hit = rank > 0
    return {
        "hr@1": float(np.mean(hit & (rank <= 1))),
        "hr@5": float(np.mean(hit & (rank <= 5))),
        "hr@10": float(np.mean(hit & (rank <= 10))),
        "mrr@10": float(np.mean(np.where(hit & (rank <= 10), 1.0 / np.maximum(rank, 1), 0.0))),
    }


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, object]:
    """Accuracy, macro-F1 over the classes that occur (in truth or prediction), and per-class recall."""
    classes = sorted(set(truth.tolist()) | set(predicted.tolist()))
    f1s, recall = [], {}
    for c in classes:
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        precision = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * rec / (precision + rec) if precision + rec else 0.0)
        if tp + fn:
            recall[names[c]] = float(rec)
    return {"accuracy": float(np.mean(truth == predicted)), "macro_f1": float(np.mean(f1s)),
            "recall": recall}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN without both classes."""
    labels = labels.astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    rank = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    rank[order] = np.repeat(avg, counts)
    return float((rank[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    labels = labels.astype(bool)
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].sum() / hits.sum())


CLASS_WEIGHT_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


def tune_class_weights(probs: np.ndarray, truth: np.ndarray, names: Sequence[str], passes: int = 3) -> np.ndarray:
    """Per-class factors w for the decision argmax(p * w) with the best macro-F1 on these (validation) examples.

    Argmax of calibrated probabilities almost never names a rare class (cart, purchase); a marketer acting on
    the predicted next action wants each class found, which is what macro-F1 scores. Coordinate ascent over a
    grid, from w = 1 (plain argmax); a class absent from ``truth`` keeps factor 1.
    """
    weights = np.ones(probs.shape[1])
    present = set(truth.tolist())

    def score(w: np.ndarray) -> float:
        return float(classification_metrics(truth, (probs * w).argmax(axis=1), names)["macro_f1"])

    best = score(weights)
    for _ in range(passes):
        improved = False
        for c in sorted(present):
            for g in CLASS_WEIGHT_GRID:
                trial = weights.copy()
                trial[c] = g
                value = score(trial)
                if value > best + 1e-9:
                    weights, best, improved = trial, value, True
        if not improved:
            break
    return weights


def brier(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean squared error of probabilities against 0/1 outcomes (lower is better)."""
    return float(np.mean((probabilities.astype(np.float64) - labels.astype(np.float64)) ** 2))


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[list[float]]:
    """The reliability curve: [mean predicted probability, observed rate, share of the examples] per bin of
    equal counts, lowest probabilities first."""
    order = np.argsort(probabilities, kind="mergesort")
    rows = []
    for part in np.array_split(order, min(bins, len(order))):
        if len(part):
            rows.append([float(probabilities[part].mean()), float(labels[part].mean()), len(part) / len(order)])
    return rows


def calibration_error(curve: list[list[float]]) -> float:
    """Expected calibration error: the share-weighted gap between predicted and observed in the curve's bins."""
    return float(sum(share * abs(predicted - observed) for predicted, observed, share in curve))
