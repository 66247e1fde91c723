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
from model.artifact import FORMAT_VERSION, WEIGHTS, weights_digest, write_manifest
from model.config import NetworkConfig, TrainConfig
from model.data import EventLog, TimeSplit, load_events, target_positions
from model.examples import LogColumns
from model.features import FeatureSpec
from model.network import build_network, build_training_model, negative_log_likelihood


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
          mapping: str | None = None, tensorboard: bool = False, verbose: int | str = "auto") -> dict[str, Any]:
    """Train on the earlier part of the logs' time range and write the artifact to ``out``."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    log, reports = load_events(paths, fmt, mapping)
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
    callbacks: list[Any] = [keras.callbacks.EarlyStopping(monitor="val_next_category_loss", mode="min",
                                                          patience=config.patience, restore_best_weights=True)]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, callbacks=callbacks, verbose=verbose)

    network.save(out / WEIGHTS)
    losses = {k: [round(float(v), 5) for v in vals] for k, vals in history.history.items()}
    best_epoch = int(np.argmin(losses["val_next_category_loss"]))
    digest = weights_digest(out / WEIGHTS)
    now = dt.datetime.now(dt.timezone.utc)
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": f"{now:%Y%m%d%H%M%S}-{digest[:8]}",
        "created_at": now.isoformat(timespec="seconds"),
        "weights_sha256": digest,
        "network": net_config.to_json(),
        "features": spec.to_json(),
        "prior": prior(log, train_targets, columns.purchase_soon),
        "training": {
            "logs": [str(p) for p in paths], "format": fmt, "data_fingerprint": log.fingerprint(),
            "read": [r.summary() for r in reports], "cleaning": log.cleaning,
            "users": log.n_users, "events": len(log),
            "split": {"val_start_ms": split.val_start_ms, "test_start_ms": split.test_start_ms,
                      "test_fraction": config.test_fraction, "val_fraction": config.val_fraction},
            "train_examples": len(train_targets), "val_examples": len(val_targets),
            "config": dataclasses.asdict(config), "epochs_run": len(losses["loss"]), "best_epoch": best_epoch + 1,
            "seconds": round(time.perf_counter() - started, 1),
            "event_type_weights": event_type_weights(y_train["next_event_type"], len(EVENT_TYPES)).round(4).tolist(),
        },
        "metrics": {"history": losses, "best": {k: v[best_epoch] for k, v in losses.items()}},
    }
    write_manifest(out, manifest)
    plot_losses(losses, out / "loss_curve.png", manifest["version"])
    return manifest


def plot_losses(losses: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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



