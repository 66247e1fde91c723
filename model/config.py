"""The network's and the training's hyper-parameters, importable without TensorFlow (the CLI's defaults)."""
from __future__ import annotations

import dataclasses
from typing import Any

ARCHITECTURES = ("lstm", "gru", "transformer")  # the sequence layers model.network builds


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of the network; stored in the manifest, never re-guessed at load.

    Training fills it from the fitted vocabulary and the :class:`TrainConfig` fields of the same names.
    """

    n_categories: int
    n_event_types: int
    window_length: int
    lstm_units: int
    lstm_layers: int
    dropout: float
    purchase_horizon: int
    recurrent_steps: int  # the LSTM reads this many newest steps (0: the whole window); the pointer all
    arch: str = "lstm"  # the sequence layers: lstm, gru or transformer (ARCHITECTURES)
    category_dim: int = 48
    event_type_dim: int = 8
    intent_units: int = 32  # hidden layer of the event type and purchase heads (LSTM state + window summary)

    @classmethod
    def for_training(cls, config: TrainConfig, n_categories: int, n_event_types: int) -> NetworkConfig:
        shared = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(config)}
        return cls(n_categories=n_categories, n_event_types=n_event_types,
                   **{name: getattr(config, name) for name in shared})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train, and the network's shape (the fields it shares with :class:`NetworkConfig`)."""

    window_length: int = 50
    lstm_units: int = 32  # units of the sequence layers, whichever the architecture
    lstm_layers: int = 1
    arch: str = "lstm"
    recurrent_steps: int = 0
    dropout: float = 0.1
    purchase_horizon: int = 5
    min_category_count: int = 2
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    epochs: int = 0  # 0: chosen from the data size (model.train.auto_epochs); early stopping ends most runs
    patience: int = 3
    max_fit_seconds: float = 180.0  # no epoch starts that would end later than this (0: no limit)
    batch_size: int = 512
    learning_rate: float = 3e-3
    max_val_examples: int = 20_000
    max_tune_examples: int = 5_000  # validation targets that choose the recency decay and the mix weights
    seed: int = 0
    final: bool = False  # the stored counts also take in the test slice (a model to deploy, not to evaluate)
