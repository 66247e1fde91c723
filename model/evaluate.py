"""Evaluate a model artifact against baselines on a log: metrics.json, report.md and a comparison chart."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.errors import InputError
from core.events import EVENT_TYPES
from model.artifact import read_manifest
from model.baselines import CategoryBaselines, recent_cart_score
from model.data import (
    TimeSplit,
    load_events,
    purchase_labels,
    target_positions,
    user_start_of,
)
from model.metrics import (
    classification_metrics,
    pr_auc,
    ranking_metrics,
    ranks,
    roc_auc,
)

DECAYS = (0.5, 0.7, 0.8, 0.9, 0.95, 1.0)


def evaluate(model_dir: str | Path, paths: Sequence[str | Path], fmt: str, *, mapping: str | None = None,
             split: Literal["time", "none"] = "time", out: str | Path | None = None,
             progress: bool = True, max_targets: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Metrics of the model and the baselines on the test events of the log (see the module docstring)."""
    manifest = read_manifest(model_dir)  # a missing artifact fails here, before TensorFlow loads
    from tqdm import tqdm

    from model.predictor import Predictor
    from model.window import Window

    started = time.perf_counter()
    log, _ = load_events(paths, fmt, mapping)
    n_window = manifest["network"]["window_length"]
    horizon = manifest["network"]["purchase_horizon"]
    if split == "time":
        cut = manifest["training"]["split"]
        s = TimeSplit.by_fraction(log, test=cut["test_fraction"], val=cut["val_fraction"])
        targets = target_positions(log, s.test_start_ms, None)
        fit_mask = log.times_ms < s.test_start_ms
        tune = target_positions(log, s.val_start_ms, s.test_start_ms)
    else:  # every event of a log the model never saw, predicted from the events before it
        targets = target_positions(log, None, None)
        fit_mask = np.ones(len(log), dtype=bool)  # baselines see the whole log: favours them, never us
        tune = targets
    if len(targets) == 0:
        raise InputError("no events to evaluate (a target needs an earlier event of the same user)")
    if max_targets and len(targets) > max_targets:
        targets = np.sort(np.random.default_rng(seed).choice(targets, max_targets, replace=False))
    user_start = user_start_of(log)
    starts = np.maximum(user_start[targets], targets - n_window)
    truth_cat = log.category_ids[targets].tolist()
    truth_type = log.event_types[targets].astype(np.int64)
    buy = purchase_labels(log, horizon)[targets]

    predictor = Predictor(model_dir)
    model_top: list[list[str]] = []
    model_types, model_buy = [], []
    chunk = 2048
    for lo in tqdm(range(0, len(targets), chunk), desc="model", unit=" batches", disable=not progress or None):
        windows = [Window(log.category_ids[a:b], log.event_types[a:b], log.times_ms[a:b])
                   for a, b in zip(starts[lo: lo + chunk], targets[lo: lo + chunk])]
        p = predictor.predict(windows)
        model_top.extend([c for c, _ in row] for row in p.top_categories)
        model_types.append(p.event_type_probs)
        model_buy.append(p.purchase_probability)
    type_probs = np.concatenate(model_types)
    buy_scores = np.concatenate(model_buy)

    baselines = CategoryBaselines(log, fit_mask)
    baselines.decay = _best_decay(baselines, log, tune, user_start, n_window)
    windows_cats = [log.category_ids[a:b].tolist() for a, b in zip(starts, targets)]
    methods: dict[str, Any] = {
        "lstm": model_top,
        "most_popular": [baselines.most_popular(w) for w in windows_cats],
        "repeat_last": [baselines.repeat_last(w) for w in windows_cats],
        "markov": [baselines.markov_chain(w) for w in windows_cats],
        f"recency_frequency(decay={baselines.decay})": [baselines.recency_frequency(w) for w in windows_cats],
    }
    category = {name: ranking_metrics(ranks(top, truth_cat)) for name, top in methods.items()}
    # no method that ranks the user's own window categories can hit more often than this
    in_window = float(np.mean([t in set(w) for t, w in zip(truth_cat, windows_cats)]))
    majority = int(np.bincount(log.event_types[fit_mask], minlength=len(EVENT_TYPES)).argmax())
    event_type = {
        "lstm": classification_metrics(truth_type, type_probs.argmax(axis=1), EVENT_TYPES),
        f"majority({EVENT_TYPES[majority]})": classification_metrics(
            truth_type, np.full_like(truth_type, majority), EVENT_TYPES),
    }
    cart_scores = np.array([recent_cart_score(log.event_types[a:b]) for a, b in zip(starts, targets)])
    purchase = {
        "lstm": {"roc_auc": roc_auc(buy, buy_scores), "pr_auc": pr_auc(buy, buy_scores)},
        "recent_cart": {"roc_auc": roc_auc(buy, cart_scores), "pr_auc": pr_auc(buy, cart_scores)},
        "base_rate": float(buy.mean()),
    }
    best_baseline = max((n for n in category if n != "lstm"), key=lambda n: category[n]["mrr@10"])
    metrics = {
        "model_version": manifest["version"], "logs": [str(p) for p in paths], "split": split,
        "targets": int(len(targets)), "users": int(len(np.unique(log.user_ids[targets]))),
        "next_category": category, "next_event_type": event_type, "purchase": purchase,
        "best_category_baseline": best_baseline, "targets_in_window": round(in_window, 4),
        "lift_over_best_baseline": {m: _lift(category["lstm"][m], category[best_baseline][m])
                                    for m in ("hr@1", "hr@5", "hr@10", "mrr@10")},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if out is not None:
        write_report(metrics, Path(out))
    return metrics


def _lift(ours: float, theirs: float) -> float:
    return round(ours / theirs - 1.0, 4) if theirs > 0 else float("nan")


def _best_decay(baselines: CategoryBaselines, log: Any, tune: np.ndarray, user_start: np.ndarray,
                n_window: int, sample: int = 5000) -> float:
    """The recency decay that serves the baseline best on the tuning events (validation, when there is one)."""
    if len(tune) == 0:
        return baselines.decay
    tune = tune[:: max(1, len(tune) // sample)]
    starts = np.maximum(user_start[tune], tune - n_window)
    windows = [log.category_ids[a:b].tolist() for a, b in zip(starts, tune)]
    truth = log.category_ids[tune].tolist()
    scored = {d: ranking_metrics(ranks([baselines.recency_frequency(w, d) for w in windows], truth))["mrr@10"]
              for d in DECAYS}
    return max(scored, key=scored.__getitem__)


def write_report(metrics: dict[str, Any], out: Path) -> None:
    """metrics.json, report.md and comparison.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    lines = [f"# Evaluation of model {metrics['model_version']}", "",
             f"Logs: {', '.join(metrics['logs'])}; split: {metrics['split']}; {metrics['targets']} predicted "
             f"events of {metrics['users']} users.", "", "## Next category", "",
             "| method | HR@1 | HR@5 | HR@10 | MRR@10 |", "|---|---|---|---|---|"]
    for name, m in metrics["next_category"].items():
        lines.append(f"| {name} | {m['hr@1']:.4f} | {m['hr@5']:.4f} | {m['hr@10']:.4f} | {m['mrr@10']:.4f} |")
    lift = metrics["lift_over_best_baseline"]
    lines += ["", f"Lift of the LSTM over the best baseline ({metrics['best_category_baseline']}): "
              + ", ".join(f"{k} {v:+.1%}" for k, v in lift.items()), "",
              f"The true next category is in the user's window for {metrics['targets_in_window']:.1%} of the "
              "events: the ceiling of any method that ranks the user's own recent categories.",
              "", "## Next event type", "",
              "| method | accuracy | macro-F1 | recall per class |", "|---|---|---|---|"]
    for name, m in metrics["next_event_type"].items():
        recall = ", ".join(f"{k} {v:.3f}" for k, v in m["recall"].items())
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {recall} |")
    p = metrics["purchase"]
    lines += ["", "## Purchase propensity", "", f"Base rate {p['base_rate']:.4f}.", "",
              "| method | ROC-AUC | PR-AUC |", "|---|---|---|"]
    for name in ("lstm", "recent_cart"):
        lines.append(f"| {name} | {p[name]['roc_auc']:.4f} | {p[name]['pr_auc']:.4f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _chart(metrics, out / "comparison.png")


def _chart(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cat = metrics["next_category"]
    names = list(cat)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [3, 1, 1]})
    width = 0.2
    for j, metric in enumerate(("hr@1", "hr@5", "hr@10", "mrr@10")):
        axes[0].bar(np.arange(len(names)) + (j - 1.5) * width, [cat[n][metric] for n in names], width, label=metric)
    axes[0].set_xticks(np.arange(len(names)), [n.split("(")[0] for n in names], rotation=15)
    axes[0].set_title("next category")
    axes[0].legend()
    et = metrics["next_event_type"]
    axes[1].bar([n.split("(")[0] for n in et], [et[n]["macro_f1"] for n in et], color=["C0", "C7"])
    axes[1].set_title("next event type: macro-F1")
    pur = metrics["purchase"]
    axes[2].bar(["lstm", "recent_cart"], [pur["lstm"]["roc_auc"], pur["recent_cart"]["roc_auc"]], color=["C0", "C7"])
    axes[2].set_ylim(0.4, 1.0)
    axes[2].set_title("purchase: ROC-AUC")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"model {metrics['model_version']} vs baselines ({metrics['targets']} events)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


