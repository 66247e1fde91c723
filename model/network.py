"""The pure network builder: a multi-task LSTM with a pointer (copy) head over the user's own window.

Next-category probabilities mix two distributions with a learned gate g:
``p(c) = g * softmax(W q)[c] + (1 - g) * sum_{i: category_i = c} attention_i`` where q is the LSTM state after
the newest event and the attention runs over the window's steps. The copy part lets the network point back
at categories the user already visited (what the strongest simple baselines do), including categories that
are not in the vocabulary, while the generating part learns transitions and popularity.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import keras
from keras import layers, ops

from model.features import N_TIME_FEATURES


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of the network; stored in the manifest, never re-guessed at load."""

    n_categories: int
    n_event_types: int
    window_length: int = 50
    category_dim: int = 48
    event_type_dim: int = 8
    lstm_units: int = 96
    lstm_layers: int = 1
    dropout: float = 0.1
    purchase_horizon: int = 5

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(**data)


@keras.saving.register_keras_serializable(package="clickstream")
class CopyAttention(layers.Layer):
    """Attention of the newest state over the window steps, with a learned bias per distance from the end."""

    def __init__(self, units: int, max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.units, self.max_length = units, max_length
        self.keys = layers.Dense(units, use_bias=False)
        self.query = layers.Dense(units, use_bias=False)
        self.distance_bias = layers.Embedding(max_length, 1)

    def call(self, inputs: list[Any]) -> Any:
        states, mask = inputs
        length = ops.shape(states)[1]
        query = self.query(states[:, -1, :])
        scores = ops.einsum("btu,bu->bt", self.keys(states), query) / float(self.units) ** 0.5
        distance = ops.arange(length - 1, -1, -1)  # 0 for the newest step
        scores = scores + ops.squeeze(self.distance_bias(ops.minimum(distance, self.max_length - 1)), -1)[None]
        scores = ops.where(mask, scores, -1e9)
        return ops.softmax(scores, axis=-1)

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "max_length": self.max_length}


@keras.saving.register_keras_serializable(package="clickstream")
class PaddingMask(layers.Layer):
    """True at real events, False at padding (event type index 0)."""

    def call(self, event_type: Any) -> Any:
        return ops.not_equal(event_type, 0)


@keras.saving.register_keras_serializable(package="clickstream")
class LastStep(layers.Layer):
    """The newest step of a left-padded sequence (always a real event)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, states: Any) -> Any:
        return states[:, -1, :]

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None


def build_network(config: NetworkConfig) -> keras.Model:
    """Serving network: window inputs -> category_gen, attention, gate, event_type, purchase."""
    category = keras.Input((None,), dtype="int32", name="category")
    event_type = keras.Input((None,), dtype="int32", name="event_type")
    time = keras.Input((None, N_TIME_FEATURES), dtype="float32", name="time")
    x = layers.Concatenate()([
        layers.Embedding(config.n_categories, config.category_dim, name="category_embedding")(category),
        layers.Embedding(config.n_event_types, config.event_type_dim, name="event_type_embedding")(event_type),
        time,
    ])
    mask = PaddingMask(name="mask")(event_type)  # padded steps are skipped by the LSTM and the attention
    states = x
    for i in range(config.lstm_layers):
        states = layers.LSTM(config.lstm_units, return_sequences=True, dropout=config.dropout,
                             name=f"lstm_{i}")(states, mask=mask)
    last = LastStep(name="last_state")(states)
    last = layers.Dropout(config.dropout)(last)
    attention = CopyAttention(config.lstm_units, config.window_length, name="attention")([states, mask])
    outputs = {
        "category_gen": layers.Dense(config.n_categories, activation="softmax", name="category_gen")(last),
        "attention": attention,
        "gate": layers.Dense(1, activation="sigmoid", name="gate")(last),
        "event_type": layers.Dense(config.n_event_types - 1, activation="softmax", name="event_type_head")(last),
        "purchase": layers.Dense(1, activation="sigmoid", name="purchase_head")(last),
    }
    return keras.Model([category, event_type, time], outputs, name="next_intent")


def build_training_model(network: keras.Model) -> keras.Model:
    """Wraps the network with the probability of the true next category, p(target), as an output.

    Extra inputs: ``target`` (category index of the next event) and ``copy_match`` (1 where a window step
    has the same raw category as the next event, so that out-of-vocabulary categories can be copied too).
    """
    category = keras.Input((None,), dtype="int32", name="category")
    event_type = keras.Input((None,), dtype="int32", name="event_type")
    time = keras.Input((None, N_TIME_FEATURES), dtype="float32", name="time")
    target = keras.Input((), dtype="int32", name="target")
    copy_match = keras.Input((None,), dtype="float32", name="copy_match")
    out = network([category, event_type, time])

    def target_probability(args: list[Any]) -> Any:
        gen, attention, gate, tgt, match = args
        p_gen = ops.take_along_axis(gen, ops.expand_dims(tgt, -1), axis=-1)
        p_copy = ops.sum(attention * match, axis=-1, keepdims=True)
        return gate * p_gen + (1.0 - gate) * p_copy

    p_target = layers.Lambda(target_probability, name="next_category")(
        [out["category_gen"], out["attention"], out["gate"], target, copy_match])
    event_type_out = layers.Identity(name="next_event_type")(out["event_type"])
    purchase_out = layers.Identity(name="purchase")(out["purchase"])
    return keras.Model([category, event_type, time, target, copy_match],
                       {"next_category": p_target, "next_event_type": event_type_out, "purchase": purchase_out})


def negative_log_likelihood(_: Any, p_target: Any) -> Any:
    """Loss of the next-category output, which already is the probability of the truth."""
    return -ops.log(ops.clip(p_target, 1e-7, 1.0))


def config_json(config: NetworkConfig) -> str:
    return json.dumps(config.to_json(), sort_keys=True)
