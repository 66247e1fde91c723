"""The network's hyper-parameters, importable without TensorFlow."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of the network; stored in the manifest, never re-guessed at load."""

    n_categories: int
    n_event_types: int
    window_length: int = 50
    category_dim: int = 48
    event_type_dim: int = 8
    lstm_units: int = 64
    lstm_layers: int = 1
    dropout: float = 0.1
    purchase_horizon: int = 5

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(**data)
