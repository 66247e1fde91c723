"""Train the next-intent network on historical logs and write a versioned artifact folder."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError
from core.events import EVENT_TYPES
from core.logs import ReadReport
from model.artifact import FORMAT_VERSION, WEIGHTS, weights_digest, write_manifest
from model.baselines import StoredBaselines
from model.config import NetworkConfig, TrainConfig
from model.data import EventLog, TimeSplit, load_events, skipped_summary, target_positions, target_windows
from model.examples import LogColumns
from model.export import write_serving
from model.features import FeatureSpec, window_index
from model.metrics import ranking_metrics, ranks, tune_class_weights
from model.mix import NETWORK_ONLY, MixTuner
from model.network import build_network, build_training_model, negative_log_likelihood
from model.plots import pyplot
from model.purchase import PurchaseStage
from model.tf_quiet import import_tensorflow

MIN_MIX_GAIN = 0.01  # relative validation gain in HR@5 or MRR@10 that the mix must bring to be served


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def event_type_weights(types: np.ndarray, n_classes: int, cap: float = 10.0) -> np.ndarray:
    """Per-class loss weights ~ 1/sqrt(frequency), mean 1 over the training events: views dominate."""
    counts = np.bincount(types, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    weights /= (weights * counts).sum() / max(counts.sum(), 1.0)
    return np.minimum(weights, cap).astype(np.float32)


def prior(log: EventLog, targets: np.ndarray, labels: np.ndarray, top: int = 100) -> dict[str, Any]:
    """Popularity prior for users without history: most frequent categories, event type mix, buy rate."""
    cats, counts = np.unique(log.category_ids[targets], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    type_counts = np.bincount(log.event_types[targets], minlength=len(EVENT_TYPES))
    return {
        "categories": [[str(cats[i]), float(counts[i] / counts.sum())] for i in order],
        "event_types": (type_counts / max(type_counts.sum(), 1)).round(6).tolist(),
        "purchase_probability": float(labels[targets].mean()) if len(targets) else 0.0,
    }


def train(paths: Sequence[str | Path], fmt: str, out: str | Path, config: TrainConfig = TrainConfig(),
          mapping: str | None = None, tensorboard: bool = False, verbose: int | str = "auto",
          events: tuple[EventLog, list[ReadReport]] | None = None) -> dict[str, Any]:
    """Train on the earlier part of the logs' time range and write the artifact to ``out``; ``events``: the
    events already read and cleaned (from a topic), ``paths`` then only naming where they came from."""
    tf = import_tensorflow()
    import keras

    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    log, reports = events if events is not None else load_events(paths, fmt, mapping)
    split = TimeSplit.by_fraction(log, test=config.test_fraction, val=config.val_fraction)
    train_targets = target_positions(log, None, split.val_start_ms)
    val_targets = target_positions(log, split.val_start_ms, split.test_start_ms)
    if len(train_targets) == 0 or len(val_targets) == 0:
        when = "validation slice" if len(train_targets) else "training part"
        raise InputError(f"no events to predict in the {when} of the time range ({len(log)} events of "
                         f"{log.n_users} users, validation from {_utc(split.val_start_ms)}, test from "
                         f"{_utc(split.test_start_ms)}): the log is too small or its time range has a gap; "
                         "change --val-fraction / --test-fraction")
    rng = np.random.default_rng(config.seed)
    if len(val_targets) > config.max_val_examples:
        val_targets = np.sort(rng.choice(val_targets, config.max_val_examples, replace=False))

    train_events = log.times_ms < split.val_start_ms
    spec = FeatureSpec.fit(log.category_ids[train_events], min_count=config.min_category_count)
    net_config = NetworkConfig.for_training(config, spec.n_categories, spec.n_event_types)
    columns = LogColumns.of(log, spec, config.purchase_horizon)
    x_train, y_train = columns.training_arrays(train_targets, config.window_length)
    x_val, y_val = columns.training_arrays(val_targets, config.window_length)

    network = build_network(net_config)
    model = build_training_model(network)
    class_weights = keras.ops.convert_to_tensor(event_type_weights(y_train["next_event_type"], len(EVENT_TYPES)))

    def weighted_event_type_loss(y_true: Any, y_pred: Any) -> Any:
        y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return ce * keras.ops.take(class_weights, y_true)

    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0),
                  loss={"next_category": negative_log_likelihood, "next_event_type": weighted_event_type_loss,
                        "purchase": keras.losses.BinaryCrossentropy()},
                  loss_weights={"next_category": 1.0, "next_event_type": 0.5, "purchase": 0.5})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # epochs are chosen by the network's MRR@10 on the validation slice: the loss of a small log keeps
    # falling on the predictable part while the pointer is still learning, or rises while the ranking improves
    rank_rows = np.arange(len(val_targets))[:: max(1, len(val_targets) // config.max_tune_examples)]
    x_rank = {k: v[rank_rows] for k, v in x_val.items()}
    rank_index = window_index(val_targets[rank_rows], columns.user_start[val_targets[rank_rows]],
                              config.window_length)
    x_rank["raw_code"] = np.where(rank_index >= 0, columns.raw_category_code[np.maximum(rank_index, 0)], -1)
    callbacks: list[Any] = [
        ValidationRanking(network, x_rank),
        keras.callbacks.EarlyStopping(monitor=VAL_MRR, mode="max", patience=config.patience,
                                      restore_best_weights=True)]
    if config.max_fit_seconds:
        callbacks.append(TimeBudget(config.max_fit_seconds))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    epochs = config.epochs or auto_epochs(len(train_targets))
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs,
                        batch_size=config.batch_size, shuffle=True, callbacks=callbacks, verbose=verbose)

    network.save(out / WEIGHTS)
    serving_digest = weights_digest(write_serving(network, out))
    losses = {k: [round(float(v), 5) for v in vals] for k, vals in history.history.items()}
    best_epoch = int(np.argmax(losses[VAL_MRR]))
    digest = weights_digest(out / WEIGHTS)
    now = dt.datetime.now(dt.timezone.utc)
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": f"{now:%Y%m%d%H%M%S}-{digest[:8]}",
        "created_at": now.isoformat(timespec="seconds"),
        "weights_sha256": digest,
        "serving_sha256": serving_digest,
        "network": net_config.to_json(),
        "features": spec.to_json(),
        "prior": prior(log, train_targets, columns.purchase_soon),
        "training": {
            "logs": [str(p) for p in paths], "format": fmt, "data_fingerprint": log.fingerprint(),
            "read": [r.summary() for r in reports], "cleaning": log.cleaning,
            "skipped": skipped_summary(log, reports),
            "users": log.n_users, "events": len(log),
            "first_event_ms": int(log.times_ms.min()), "last_event_ms": int(log.times_ms.max()),
            "split": {"val_start_ms": split.val_start_ms, "test_start_ms": split.test_start_ms, "by": split.by,
                      "test_fraction": config.test_fraction, "val_fraction": config.val_fraction},
            "train_examples": len(train_targets), "val_examples": len(val_targets),
            "config": dataclasses.asdict(config), "max_epochs": epochs, "epochs_run": len(losses["loss"]),
            "best_epoch": best_epoch + 1,
            "seconds": round(time.perf_counter() - started, 1),
            "event_type_weights": event_type_weights(y_train["next_event_type"], len(EVENT_TYPES)).round(4).tolist(),
        },
        "metrics": {"history": losses, "best": {k: v[best_epoch] for k, v in losses.items()}},
    }
    baselines = StoredBaselines.fit(
        log, train_events, fitted_on=f"training part of the log (events before {_utc(split.val_start_ms)} UTC); "
                                     "recency decay and mix weights chosen on the validation slice")
    baselines.save(out)
    write_manifest(out, manifest)  # the predictor below needs a complete artifact (mix: the network alone)
    tune = val_targets[:: max(1, len(val_targets) // config.max_tune_examples)]
    baselines.validation = tune_on_validation(out, log, columns.user_start, tune, baselines, config.window_length)
    bought = columns.purchase_soon[val_targets]
    if bought.any() and not bought.all():
        baselines.purchase = fit_purchase_stage(out, columns, val_targets, config.window_length, config.seed)
        baselines.validation["purchase"] = baselines.purchase.validation
    else:  # e.g. a log of views only: nothing to calibrate against
        baselines.validation["purchase"] = {"served": "the network's head (no purchase stage: the validation "
                                                      f"windows are all {'bought' if bought.all() else 'not bought'})"}
    # the choices are made: the served counts take in all the history the split allows (--final: all of it)
    if config.final:
        served = np.ones(len(log), dtype=bool)
        fitted_on = "the whole log (train --final: the test slice included, not for evaluation)"
    else:
        served = log.times_ms < split.test_start_ms
        fitted_on = f"events before the test slice ({_utc(split.test_start_ms)} UTC)"
    baselines = baselines.refit(log, served, fitted_on=f"{fitted_on}; recency decay and mix weights chosen on "
                                f"the validation slice with counts of the events before {_utc(split.val_start_ms)}")
    manifest["training"]["final"] = config.final
    manifest["baselines_sha256"] = weights_digest(baselines.save(out))
    manifest["validation"] = baselines.validation
    manifest["training"]["seconds"] = round(time.perf_counter() - started, 1)
    write_manifest(out, manifest)
    plot_losses(losses, out / "loss_curve.png", manifest["version"])
    return manifest


VAL_MRR = "val_network_mrr@10"


def network_ranks(outputs: dict[str, np.ndarray], x: dict[str, np.ndarray]) -> np.ndarray:
    """1-based rank of the truth in the network's own ranking (generator + pointer), 0 when not in the top 10.

    The same scores as the predictor's (padding and OOV columns never shown; copy mass added to in-vocabulary
    window categories); other out-of-vocabulary window categories are not ranked against the truth.
    """
    gate = outputs["gate"]
    score = gate * outputs["category_gen"]
    score[:, :2] = 0.0
    copy = (1.0 - gate) * outputs["attention"]
    category = x["category"]
    rows = np.broadcast_to(np.arange(len(category))[:, None], category.shape)
    np.add.at(score, (rows, category), np.where(category > 1, copy, 0.0))
    score[:, :2] = 0.0
    target = x["target"]
    own = score[np.arange(len(target)), target]
    copied_oov = np.sum(copy * x["copy_match"], axis=1)
    truth = np.where(target > 1, own, copied_oov)
    rank = 1 + np.sum(score > truth[:, None], axis=1)
    codes = x["raw_code"]
    for r in np.flatnonzero((category == 1).any(axis=1)):  # other out-of-vocabulary window categories compete
        oov = category[r] == 1
        mass = np.bincount(np.unique(codes[r, oov], return_inverse=True)[1], weights=copy[r, oov])
        rank[r] += int(np.sum(mass > truth[r]))  # an OOV truth's own group has exactly its mass: not counted
    return np.where((truth > 0) & (rank <= 10), rank, 0)


def ValidationRanking(network: Any, x: dict[str, np.ndarray], chunk: int = 1024) -> Any:
    """A callback that adds the network's validation MRR@10 (``VAL_MRR``) to each epoch's logs."""
    import keras

    class _ValidationRanking(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            found = []
            for lo in range(0, len(x["target"]), chunk):
                part = {k: v[lo: lo + chunk] for k, v in x.items()}
                out = network.predict_on_batch([part["category"], part["event_type"], part["steps"]])
                found.append(network_ranks({k: np.asarray(v) for k, v in out.items()}, part))
            rank = np.concatenate(found)
            if logs is not None:
                logs[VAL_MRR] = float(np.mean(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0)))

    return _ValidationRanking()


def TimeBudget(seconds: float) -> Any:
    """A callback that ends training when another epoch would not finish within ``seconds`` of fitting."""
    import keras

    class _TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.started = self.epoch_started = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            now = time.perf_counter()
            if now - self.started + (now - self.epoch_started) > seconds:
                self.model.stop_training = True

    return _TimeBudget()


def auto_epochs(train_examples: int) -> int:
    """Most epochs when not given: ~1.5M example visits, 12 to 60 epochs (early stopping ends most runs)."""
    return int(np.clip(round(1_500_000 / max(train_examples, 1)), 12, 60))


def tune_on_validation(out: Path, log: EventLog, user_start: np.ndarray, targets: np.ndarray,
                       baselines: StoredBaselines, window_length: int) -> dict[str, Any]:
    """Tune the recency decay and the mix weights on validation targets; the comparison table, as metrics."""
    from model.predictor import Predictor

    starts = np.maximum(user_start[targets], targets - window_length)
    windows = [log.category_ids[a:b].tolist() for a, b in zip(starts, targets)]
    truth = log.category_ids[targets].tolist()
    baselines.tune_decay(windows, truth)
    predictor = Predictor(out, batch_sizes=(512,), lengths=(window_length,), candidates=True)
    network_top: list[list[tuple[str, float]]] = []
    type_probs = []
    for batch in target_windows(log, targets, window_length):
        prediction = predictor.predict(batch, candidates=True)
        assert prediction.network_top is not None
        network_top.extend(prediction.network_top)
        type_probs.append(prediction.event_type_probs)
    baselines.event_type_weights = tune_class_weights(
        np.concatenate(type_probs), log.event_types[targets].astype(np.int64), EVENT_TYPES).round(3).tolist()
    tuner = MixTuner(baselines, windows, network_top, truth)
    baselines.mix = tuner.tune()
    mixed = ranking_metrics(tuner.ranks(baselines.mix))
    alone = ranking_metrics(ranks([[c for c, _ in top] for top in network_top], truth))
    if all(mixed[m] < alone[m] * (1 + MIN_MIX_GAIN) for m in ("hr@5", "mrr@10")):
        # the mix re-ranks every window in Python (about 2/3 of the predictor's time): serve it only for a gain
        baselines.mix = dict(NETWORK_ONLY)
        mixed = alone
    rows = {"model": mixed, "network_alone": alone}
    for name, method in baselines.methods().items():
        rows[name] = ranking_metrics(ranks([method(w) for w in windows], truth))
    best = max((n for n in rows if n not in ("model", "network_alone")), key=lambda n: rows[n]["mrr@10"])
    return {"targets": len(targets), "mix": baselines.mix, "decay": baselines.decay, "best_baseline": best,
            "event_type_weights": baselines.event_type_weights,
            "next_category": {n: {k: round(v, 4) for k, v in m.items()} for n, m in rows.items()}}


def fit_purchase_stage(out: Path, columns: LogColumns, targets: np.ndarray, window_length: int,
                       seed: int) -> PurchaseStage:
    """The purchase stage (``model/purchase.py``) fit on the validation targets: the head's probabilities
    from the artifact written so far, the windows' purchase signals, whether a purchase followed."""
    from model.predictor import Predictor

    predictor = Predictor(out, batch_sizes=(512,), lengths=(window_length,))
    head = []
    for batch in target_windows(columns.log, targets, window_length):
        prediction = predictor.predict(batch)
        assert prediction.purchase_head is not None
        head.append(prediction.purchase_head)
    stage = PurchaseStage.fit(np.concatenate(head), columns.purchase_signals(targets, window_length),
                              columns.purchase_soon[targets], seed=seed)
    stage.validation["served"] = "platt" if len(stage.features) == 1 else f"signals C={stage.strength:g}"
    return stage


def plot_losses(losses: dict[str, list[float]], path: Path, title: str) -> None:
    plt = pyplot("loss_curve.png")
    if plt is None:
        return
    heads = ["next_category_loss", "next_event_type_loss", "purchase_loss"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, head in zip(axes, heads):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            values = losses.get(prefix + head)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label="validation" if prefix else "train")
        ax.set_title(head.removesuffix("_loss").replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"training loss, model {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



