"""Evaluate a model artifact against baselines on a log: metrics.json, report.md and a comparison chart."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.errors import InputError
from core.events import EVENT_TYPES
from core.logs import ReadReport
from model.artifact import read_manifest
from model.baselines import StoredBaselines, recent_cart_score
from model.data import EventLog, TimeSplit, load_events, purchase_labels, target_positions, target_windows, user_start_of
from model.metrics import brier, calibration_error, classification_metrics, pr_auc, ranking_metrics, ranks, reliability, roc_auc
from model.plots import pyplot


def evaluate(model_dir: str | Path, paths: Sequence[str | Path], fmt: str, *, mapping: str | None = None,
             split: Literal["time", "none"] = "time", out: str | Path | None = None,
             progress: bool = True, max_targets: int | None = None, seed: int = 0,
             resamples: int = 200, runtime: str = "numpy",
             events: tuple[EventLog, list[ReadReport]] | None = None) -> dict[str, Any]:
    """Metrics of the model and the stored baselines on the test events of the log (see the module docstring);
    ``events``: the events already read and cleaned (from a topic), ``paths`` then only naming them."""
    manifest = read_manifest(model_dir)  # a missing artifact fails here, before TensorFlow loads
    from model.predictor import Predictor

    started = time.perf_counter()
    log, _ = events if events is not None else load_events(paths, fmt, mapping)
    n_window = manifest["network"]["window_length"]
    horizon = manifest["network"]["purchase_horizon"]
    if split == "time":
        if manifest["training"].get("final"):
            print(f"warning: {model_dir} was trained with --final: its stored signals counted the test slice, "
                  "so the baseline rows and the mix below are not an honest test", file=sys.stderr)
        cut = manifest["training"]["split"]
        s = TimeSplit.by_fraction(log, test=cut["test_fraction"], val=cut["val_fraction"])
        targets = target_positions(log, s.test_start_ms, None)
    else:  # every event of a log, predicted from the events before it
        targets = target_positions(log, None, None)
    if len(targets) == 0:
        raise InputError("no events to evaluate (a target needs an earlier event of the same user)")
    if max_targets and len(targets) > max_targets:
        targets = np.sort(np.random.default_rng(seed).choice(targets, max_targets, replace=False))
    user_start = user_start_of(log)
    starts = np.maximum(user_start[targets], targets - n_window)
    truth_cat = log.category_ids[targets].tolist()
    truth_type = log.event_types[targets].astype(np.int64)
    buy = purchase_labels(log, horizon)[targets]

    if progress:
        print("evaluate: loading the model", file=sys.stderr, flush=True)
    # one batch size and the length buckets: fewer shapes to compile than the worker's default set
    predictor = Predictor(model_dir, batch_sizes=(512,), lengths=(8, 16, 32), candidates=True, runtime=runtime)
    baselines = predictor.baselines  # fit at training time before the test slice: nothing here is fit
    model_top: list[list[str]] = []
    network_top: list[list[str]] = []
    model_types, model_buy, head_buy = [], [], []
    chunk, done = 2048, 0
    report_progress = _progress(len(targets), chunk, progress)
    for windows in target_windows(log, targets, n_window, chunk):
        p = predictor.predict(windows, candidates=True)
        model_top.extend([c for c, _ in row] for row in p.top_categories)
        network_top.extend([c for c, _ in row][:10] for row in p.network_top or [])
        model_types.append(p.event_type_probs)
        model_buy.append(p.purchase_probability)
        head_buy.append(p.purchase_head)
        done += len(windows)
        report_progress(done)
    type_probs = np.concatenate(model_types)
    buy_scores = np.concatenate(model_buy)
    head_scores = np.concatenate(head_buy)

    windows_cats = [log.category_ids[a:b].tolist() for a, b in zip(starts, targets)]
    methods: dict[str, Any] = {"model": model_top, "network_alone": network_top}
    for name, method in baselines.methods().items():
        methods[name] = [method(w) for w in windows_cats]
    rank_of = {name: ranks(top, truth_cat) for name, top in methods.items()}
    category = {name: ranking_metrics(r) for name, r in rank_of.items()}
    best_baseline = max((n for n in category if n not in OURS), key=lambda n: category[n]["mrr@10"])
    users = np.unique(log.user_ids[targets], return_inverse=True)[1]
    intervals = bootstrap(rank_of, users, best_baseline, resamples=resamples, seed=seed)
    # no method that ranks the user's own window categories can hit more often than this
    in_window = float(np.mean([t in set(w) for t, w in zip(truth_cat, windows_cats)]))
    # the network's generator cannot name these: only the copy path and the stored signals reach them
    vocabulary = set(manifest["features"]["categories"])
    outside = float(np.mean([t not in vocabulary for t in truth_cat]))
    type_prior = np.asarray(manifest["prior"]["event_types"])
    majority = int(type_prior.argmax())  # from the training targets, stored in the manifest
    decision = np.asarray(baselines.event_type_weights or np.ones(type_probs.shape[1]))
    event_type = {
        "model": classification_metrics(truth_type, (type_probs * decision).argmax(axis=1), EVENT_TYPES),
        "model_argmax": classification_metrics(truth_type, type_probs.argmax(axis=1), EVENT_TYPES),
        f"majority({EVENT_TYPES[majority]})": classification_metrics(
            truth_type, np.full_like(truth_type, majority), EVENT_TYPES),
    }
    cart_scores = np.array([recent_cart_score(log.event_types[a:b]) for a, b in zip(starts, targets)])
    prior_rate = float(manifest["prior"]["purchase_probability"])  # the training targets' purchase rate
    purchase = purchase_metrics(buy, {"model": buy_scores, "network_head": head_scores, "recent_cart": cart_scores,
                                      "training_rate": np.full(len(buy), prior_rate)},
                                users, resamples=resamples, seed=seed)
    purchase["stage"] = baselines.purchase.validation.get("served", "") if baselines.purchase else "none"
    metrics = {
        "model_version": manifest["version"], "runtime": runtime, "logs": [str(p) for p in paths], "split": split,
        "targets": int(len(targets)), "users": int(users.max() + 1),
        "next_category": category, "intervals": intervals, "fitted": fitted_how(baselines),
        "fitted_on": baselines.fitted_on,
        "mix": baselines.mix, "next_event_type": event_type, "event_type_weights": decision.round(3).tolist(),
        "purchase": purchase,
        "best_category_baseline": best_baseline, "targets_in_window": round(in_window, 4),
        "targets_outside_vocabulary": round(outside, 4),
        "lift_over_best_baseline": {m: _lift(category["model"][m], category[best_baseline][m])
                                    for m in ("hr@1", "hr@5", "hr@10", "mrr@10")},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if out is not None:
        write_report(metrics, Path(out))
    return metrics


def compare(candidate_dir: str | Path, serving_dir: str | Path, log: EventLog, metric: str = "mrr@10",
            resamples: int = 200, seed: int = 0, level: float = 0.95, runtime: str = "numpy",
            progress: bool = True) -> dict[str, Any]:
    """Champion and challenger on the same events: every event of ``log`` with an earlier event of its user
    predicted by both models (each from its own window length), their HR@1/HR@5/MRR@10, and a bootstrap
    interval over users (resampled together: a paired comparison) of the candidate minus the serving model on
    ``metric``."""
    from model.predictor import Predictor

    if metric not in CI_METRICS:
        raise ValueError(f"metric {metric!r}: one of {', '.join(CI_METRICS)}")
    targets = target_positions(log, None, None)
    if len(targets) == 0:
        raise InputError("no events to compare on (a target needs an earlier event of the same user)")
    truth = log.category_ids[targets].tolist()
    rank_of, versions = {}, {}
    for name, folder in (("serving", serving_dir), ("candidate", candidate_dir)):
        predictor = Predictor(folder, batch_sizes=(512,), lengths=(8, 16, 32), runtime=runtime)
        versions[name] = predictor.version
        top: list[list[str]] = []
        report_progress = _progress(len(targets), 2048, progress)
        for windows in target_windows(log, targets, predictor.window_length):
            top.extend([c for c, _ in row] for row in predictor.predict(windows).top_categories)
            report_progress(len(top))
        rank_of[name] = ranks(top, truth)
    users = np.unique(log.user_ids[targets], return_inverse=True)[1]
    per_user = bootstrap(rank_of | {"model": rank_of["candidate"]}, users, "serving", resamples, seed, level)
    rng = np.random.default_rng(seed)
    n_users = int(users.max()) + 1
    counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=resamples).astype(np.float64)
    n_per_resample = counts @ np.bincount(users, minlength=n_users)
    value = {name: per_target(r, metric) for name, r in rank_of.items()}
    difference = counts @ np.bincount(users, weights=value["candidate"] - value["serving"], minlength=n_users)
    difference /= n_per_resample
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {"metric": metric, "targets": int(len(targets)), "users": n_users, "versions": versions,
            "serving": ranking_metrics(rank_of["serving"]), "candidate": ranking_metrics(rank_of["candidate"]),
            "intervals": {name: per_user["methods"][name] for name in ("serving", "candidate")},
            "difference": float(value["candidate"].mean() - value["serving"].mean()),
            "difference_interval": [float(np.percentile(difference, lo_q)), float(np.percentile(difference, hi_q))],
            "level": level, "first_event_ms": int(log.times_ms.min()), "last_event_ms": int(log.times_ms.max())}


OURS = ("model", "network_alone")
CI_METRICS = ("hr@1", "hr@5", "mrr@10")


def _progress(total: int, chunk: int, enabled: bool) -> Callable[[int], None]:
    """A tqdm bar on a terminal; otherwise one line per chunk on stderr, so a log or a CI job sees progress."""
    if not enabled:
        return lambda done: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="model", unit=" events")
        return lambda done: (bar.update(done - bar.n), bar.close() if done >= total else None)  # type: ignore
    started = time.perf_counter()

    def line(done: int) -> None:
        print(f"evaluate: {done}/{total} events predicted ({time.perf_counter() - started:.0f}s)",
              file=sys.stderr, flush=True)
    return line


AUDIENCE_THRESHOLDS = (0.1, 0.2, 0.3, 0.5)
PROBABILITIES = ("model", "network_head", "training_rate")  # purchase scores meant as probabilities


def purchase_metrics(labels: np.ndarray, scores: dict[str, np.ndarray], users: np.ndarray, resamples: int = 200,
                     seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """ROC-AUC, PR-AUC and (for probabilities) Brier score and calibration error per method, the model's
    reliability curve, and bootstrap intervals over users of the model's difference to the network's head."""
    out: dict[str, Any] = {"base_rate": float(labels.mean())}
    for name, p in scores.items():
        row = {"roc_auc": roc_auc(labels, p), "pr_auc": pr_auc(labels, p)}
        if name in PROBABILITIES:
            curve = reliability(labels, p)
            row |= {"brier": brier(labels, p), "calibration_error": calibration_error(curve), "reliability": curve}
        out[name] = row
    model = scores["model"]
    # what an audience threshold on the served probability selects (streams/audience.py)
    out["thresholds"] = {f"{t:g}": {"selected": float(np.mean(model >= t)),
                                    "precision": float(labels[model >= t].mean()) if (model >= t).any() else None,
                                    "recall": float(np.sum(labels & (model >= t)) / max(labels.sum(), 1))}
                         for t in AUDIENCE_THRESHOLDS}
    rng = np.random.default_rng(seed)
    n_users = int(users.max()) + 1
    by_user = np.argsort(users, kind="stable")
    first = np.searchsorted(users[by_user], np.arange(n_users + 1))
    differences: dict[str, list[float]] = {"roc_auc": [], "pr_auc": [], "brier": []}
    for _ in range(resamples):
        picked = rng.integers(0, n_users, n_users)
        rows = by_user[np.concatenate([np.arange(first[u], first[u + 1]) for u in picked])]
        y = labels[rows]
        if y.min() == y.max():
            continue
        for metric, fn in (("roc_auc", roc_auc), ("pr_auc", pr_auc), ("brier", brier)):
            differences[metric].append(fn(y, scores["model"][rows]) - fn(y, scores["network_head"][rows]))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out["model_minus_head"] = {m: [round(float(np.percentile(v, q)), 4) for q in (lo_q, hi_q)] if v else None
                               for m, v in differences.items()}
    out["intervals"] = {"resamples": resamples, "level": level}
    return out


def fitted_how(baselines: StoredBaselines) -> dict[str, str]:
    """How each row was fit: nothing in the evaluation is fit on the log it scores."""
    stored = "counts stored at training"
    return {
        "model": "network + mix weights " + ", ".join(f"{k} {v:g}" for k, v in baselines.mix.items() if v)
                 + " (weights chosen on validation)",
        "network_alone": "trained on the training part, early stopping on validation",
        "most_popular": stored, "repeat_last": "nothing to fit", "markov": stored,
        "last_then_markov": stored, "item_knn": stored, "session_knn": stored,
        f"recency_frequency(decay={baselines.decay})": "decay chosen on validation",
    }


def per_target(rank: np.ndarray, metric: str) -> np.ndarray:
    """Each target's share of HR@1, HR@5 or MRR@10 (their mean is the metric) from 1-based ranks (0: absent)."""
    value = {"hr@1": rank == 1, "hr@5": (rank > 0) & (rank <= 5),
             "mrr@10": np.where((rank > 0) & (rank <= 10), 1.0 / np.maximum(rank, 1), 0.0)}[metric]
    return value.astype(np.float64)


def bootstrap(rank_of: dict[str, np.ndarray], users: np.ndarray, best_baseline: str, resamples: int = 200,
              seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Percentile intervals over users (resampled with replacement) of HR@1/HR@5/MRR@10 of every method and
    of the model's relative lift over the best baseline, which is chosen once on the full test set."""
    rng = np.random.default_rng(seed)
    n_users = int(users.max()) + 1
    counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=resamples).astype(np.float64)
    per_user_n = counts @ np.bincount(users, minlength=n_users)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def per_user(r: np.ndarray, metric: str) -> np.ndarray:
        return counts @ np.bincount(users, weights=per_target(r, metric), minlength=n_users)

    out: dict[str, Any] = {"resamples": resamples, "level": level, "methods": {}, "lift": {}}
    for name, r in rank_of.items():
        out["methods"][name] = {m: [round(float(np.percentile(per_user(r, m) / per_user_n, q)), 4)
                                    for q in (lo_q, hi_q)] for m in CI_METRICS}
    for m in CI_METRICS:
        base = per_user(rank_of[best_baseline], m)
        lift = per_user(rank_of["model"], m) / np.maximum(base, 1e-12) - 1.0
        out["lift"][m] = [round(float(np.percentile(lift, q)), 4) for q in (lo_q, hi_q)]
    return out


def _lift(ours: float, theirs: float) -> float:
    return round(ours / theirs - 1.0, 4) if theirs > 0 else float("nan")


def write_report(metrics: dict[str, Any], out: Path) -> None:
    """metrics.json, report.md and comparison.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    ci = metrics["intervals"]
    level = f"{ci['level']:.0%}"
    lines = [f"# Evaluation of model {metrics['model_version']}", "",
             f"Logs: {', '.join(metrics['logs'])}; split: {metrics['split']}; runtime: {metrics['runtime']}; "
             f"{metrics['targets']} predicted "
             f"events of {metrics['users']} users. Every baseline was fit when the model was trained and read "
             "back from the artifact: nothing below is fit on the scored events of a time split "
             f"(stored baselines: {metrics['fitted_on']}).",
             "", "## Next category", "",
             f"Brackets: {level} bootstrap intervals over users ({ci['resamples']} resamples).", "",
             "| method | HR@1 | HR@5 | HR@10 | MRR@10 | fit |", "|---|---|---|---|---|---|"]
    for name, m in metrics["next_category"].items():
        c = ci["methods"][name]
        lines.append(f"| {name} | {m['hr@1']:.4f} [{c['hr@1'][0]:.3f}, {c['hr@1'][1]:.3f}] "
                     f"| {m['hr@5']:.4f} [{c['hr@5'][0]:.3f}, {c['hr@5'][1]:.3f}] | {m['hr@10']:.4f} "
                     f"| {m['mrr@10']:.4f} [{c['mrr@10'][0]:.3f}, {c['mrr@10'][1]:.3f}] "
                     f"| {metrics['fitted'].get(name, '')} |")
    lift = metrics["lift_over_best_baseline"]
    lines += ["", f"Lift of the model over the best baseline ({metrics['best_category_baseline']}): "
              + ", ".join(f"{k} {v:+.1%}" + (f" [{ci['lift'][k][0]:+.1%}, {ci['lift'][k][1]:+.1%}]"
                                            if k in ci["lift"] else "") for k, v in lift.items()), "",
              f"The true next category is in the user's window for {metrics['targets_in_window']:.1%} of the "
              "events: the ceiling of any method that ranks the user's own recent categories. "
              f"{metrics['targets_outside_vocabulary']:.1%} of the true next categories are outside the network's "
              "vocabulary: only its copy path and the stored signals can name them.",
              "", "## Next event type", "",
              "model: argmax of the probabilities times per-class factors chosen on the validation slice "
              f"({metrics['event_type_weights']}); model_argmax: the plain argmax.", "",
              "| method | accuracy | macro-F1 | recall per class |", "|---|---|---|---|"]
    for name, m in metrics["next_event_type"].items():
        recall = ", ".join(f"{k} {v:.3f}" for k, v in m["recall"].items())
        lines.append(f"| {name} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {recall} |")
    p = metrics["purchase"]
    lines += ["", "## Purchase propensity", "",
              f"Base rate {p['base_rate']:.4f}. model: the served probability, the network's purchase head through "
              f"the purchase stage fit on the validation slice ({p['stage']}); network_head: the head alone; "
              "recent_cart: decay^(events since the newest cart), a ranking only; training_rate: the training "
              "targets' purchase rate for everyone. Brier score and calibration error (ECE, 10 bins of equal "
              "counts): lower is better.", "",
              "| method | ROC-AUC | PR-AUC | Brier | ECE |", "|---|---|---|---|---|"]
    for name in ("model", "network_head", "recent_cart", "training_rate"):
        if name not in p:  # a report written before the purchase stage
            continue
        row = p[name]
        extra = f"{row['brier']:.5f} | {row['calibration_error']:.4f}" if "brier" in row else "- | -"
        lines.append(f"| {name} | {row['roc_auc']:.4f} | {row['pr_auc']:.4f} | {extra} |")
    diff = p.get("model_minus_head") or {}
    if all(diff.get(m) for m in ("roc_auc", "pr_auc", "brier")):
        lines += ["", f"Model minus network_head, {level} bootstrap intervals over users: ROC-AUC "
                  f"[{diff['roc_auc'][0]:+.4f}, {diff['roc_auc'][1]:+.4f}], PR-AUC [{diff['pr_auc'][0]:+.4f}, "
                  f"{diff['pr_auc'][1]:+.4f}], Brier [{diff['brier'][0]:+.5f}, {diff['brier'][1]:+.5f}]. "
                  "The reliability curve is in calibration.png."]
    if p.get("thresholds"):
        lines += ["", "What a threshold on the model's probability selects (an audience, "
                  "`CLICKSTREAM_AUDIENCE_THRESHOLD`):", "", "| threshold | events selected | of which followed by "
                  "a purchase | purchases found |", "|---|---|---|---|"]
        for t, row in p["thresholds"].items():
            precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
            lines.append(f"| {t} | {row['selected']:.2%} | {precision} | {row['recall']:.2%} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _chart(metrics, out / "comparison.png")
    _calibration_chart(metrics, out / "calibration.png")


def _chart(metrics: dict[str, Any], path: Path) -> None:
    plt = pyplot("comparison.png")
    if plt is None:
        return
    cat = metrics["next_category"]
    names = list(cat)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [3, 1, 1]})
    width = 0.2
    for j, metric in enumerate(("hr@1", "hr@5", "hr@10", "mrr@10")):
        axes[0].bar(np.arange(len(names)) + (j - 1.5) * width, [cat[n][metric] for n in names], width, label=metric)
    axes[0].set_xticks(np.arange(len(names)), [n.split("(")[0] for n in names], rotation=20)
    axes[0].set_title("next category")
    axes[0].legend()
    et = metrics["next_event_type"]
    axes[1].bar([n.split("(")[0] for n in et], [et[n]["macro_f1"] for n in et], color=["C0", "C1", "C7"][: len(et)])
    axes[1].set_title("next event type: macro-F1")
    pur = metrics["purchase"]
    shown = [n for n in ("model", "network_head", "recent_cart") if n in pur]
    axes[2].bar(shown, [pur[n]["roc_auc"] for n in shown], color=["C0", "C1", "C7"][: len(shown)])
    axes[2].set_ylim(0.4, 1.0)
    axes[2].set_title("purchase: ROC-AUC")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"model {metrics['model_version']} vs baselines ({metrics['targets']} events)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)




def _calibration_chart(metrics: dict[str, Any], path: Path) -> None:
    """The reliability curve of the served purchase probability and of the network's head."""
    plt = pyplot("calibration.png")
    purchase = metrics["purchase"]
    if plt is None or "reliability" not in purchase.get("model", {}):
        return
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    top = 0.0
    for name, style in (("model", "-o"), ("network_head", "--s")):
        curve = np.asarray(purchase[name]["reliability"])
        top = max(top, curve[:, :2].max())
        ax.plot(curve[:, 0], curve[:, 1], style, label=f"{name} (Brier {purchase[name]['brier']:.4f}, "
                                                        f"ECE {purchase[name]['calibration_error']:.3f})")
    top = min(1.0, top * 1.1 + 1e-3)
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted purchase probability (bin mean)")
    ax.set_ylabel("observed purchase rate")
    ax.set_title(f"purchase within the horizon: reliability ({metrics['targets']} events)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
