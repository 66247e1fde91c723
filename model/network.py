"""The pure network builder: a multi-task LSTM with a pointer (copy) head over the user's own window.

Next-category probabilities mix two distributions with a learned gate g:
``p(c) = g * softmax(W q)[c] + (1 - g) * sum_{i: category_i = c} attention_i`` where q is the LSTM state after
the newest event and the attention runs over the window's steps. The copy part lets the network point back
at categories the user already visited (what the strongest simple baselines do), including categories that
are not in the vocabulary, while the generating part learns transitions and popularity.
"""
from __future__ import annotations

import math
from typing import Any

from model.tf_quiet import import_tensorflow

import_tensorflow()  # keras loads TensorFlow: quietly, before keras does it with all its start-up noise

import keras
from keras import layers, ops

from model.config import ARCHITECTURES, NetworkConfig
from model.features import GAP_SCALE, N_STEP_FEATURES, STEP_FEATURES


@keras.saving.register_keras_serializable(package="clickstream")
class CopyAttention(layers.Layer):
    """Attention of the newest LSTM state over the window steps.

    Score of step i: a content term (key of step i's representation, the LSTM state or the step input, . query
    of the newest state), an additive term over the step's repetition and time features given the query, and
    a learned bias per distance from the end.
    """

    def __init__(self, units: int, max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.units, self.max_length = units, max_length
        self.keys = layers.Dense(units, use_bias=False)
        self.query = layers.Dense(units, use_bias=False)
        self.distance_bias = layers.Embedding(max_length, 1)
        self.feature_hidden = layers.Dense(32, use_bias=True)
        self.query_hidden = layers.Dense(32, use_bias=False)
        self.feature_score = layers.Dense(1, use_bias=False)

    def build(self, input_shape: Any) -> None:
        states_shape, features_shape, _, newest_shape = input_shape
        self.keys.build(states_shape)
        self.query.build(newest_shape)
        self.distance_bias.build((None,))
        self.feature_hidden.build(features_shape)
        self.query_hidden.build(newest_shape)
        self.feature_score.build((None, None, 32))
        self.built = True

    def call(self, inputs: list[Any]) -> Any:
        states, features, mask, newest = inputs
        length = ops.shape(states)[1]
        query = self.query(newest)
        scores = ops.einsum("btu,bu->bt", self.keys(states), query) / float(self.units) ** 0.5
        hidden = ops.tanh(self.feature_hidden(features) + self.query_hidden(newest)[:, None, :])
        scores = scores + ops.squeeze(self.feature_score(hidden), -1)
        distance = ops.arange(length - 1, -1, -1)  # 0 for the newest step
        scores = scores + ops.squeeze(self.distance_bias(ops.minimum(distance, self.max_length - 1)), -1)[None]
        scores = ops.where(mask, scores, -1e9)
        return ops.softmax(scores, axis=-1)

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "max_length": self.max_length}


@keras.saving.register_keras_serializable(package="clickstream")
class WindowSummary(layers.Layer):
    """Counts of each event type in the window: all of it, and within ~1 min, 10 min, 30 min and 5 h before
    the newest event (soft cut-offs on the scaled ``age`` step feature), plus the event counts in those spans.

    These are what a hand-made purchase model starts from; given to the event type and purchase heads next
    to the LSTM state, they do not have to be squeezed through a state that the category task dominates.
    """

    AGE_FEATURE = STEP_FEATURES.index("age")
    CUTOFFS = tuple(math.log1p(seconds) / GAP_SCALE for seconds in (60, 600, 1800, 18000))  # 0.411 ... 0.980

    def __init__(self, n_event_types: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_event_types = n_event_types

    def call(self, inputs: list[Any]) -> Any:
        event_type, steps, mask = inputs
        valid = ops.cast(mask, "float32")
        types = ops.one_hot(event_type, self.n_event_types)[..., 1:] * valid[..., None]  # (B, T, K)
        age = steps[..., self.AGE_FEATURE]
        spans = [valid] + [ops.sigmoid(20.0 * (cut - age)) * valid for cut in self.CUTOFFS]
        span = ops.stack(spans, axis=-1)  # (B, T, S)
        per_type = ops.einsum("bts,btk->bsk", span, types)
        events = ops.sum(span, axis=1)
        batch = ops.shape(event_type)[0]
        return ops.log1p(ops.concatenate([ops.reshape(per_type, (batch, -1)), events], axis=-1))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        spans = len(self.CUTOFFS) + 1
        return (input_shape[0][0], spans * self.n_event_types)  # (K types + 1 event count) per span

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_event_types": self.n_event_types}


@keras.saving.register_keras_serializable(package="clickstream")
class CausalSelfAttention(layers.Layer):
    """One pre-norm Transformer block over the window (SASRec-like): each step attends to itself and the
    earlier real events, ``x + MHA(LN(x))`` then ``x + FFN(LN(x))`` with a ReLU feed-forward of twice the width.

    Padding steps (left of the window) attend to nothing real; their outputs are never read (the pointer masks
    them, the heads read the newest step).
    """

    def __init__(self, units: int, heads: int = 2, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.units, self.heads, self.dropout = units, heads, dropout
        self.norm_attention = layers.LayerNormalization(name="norm_attention")
        self.attention = layers.MultiHeadAttention(heads, units // heads, dropout=dropout, name="attention")
        self.norm_feed = layers.LayerNormalization(name="norm_feed")
        self.feed_hidden = layers.Dense(2 * units, activation="relu", name="feed_hidden")
        self.feed_out = layers.Dense(units, name="feed_out")
        self.drop = layers.Dropout(dropout)

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        self.norm_attention.build(shape)
        self.attention.build(shape, shape)
        self.norm_feed.build(shape)
        self.feed_hidden.build(shape)
        self.feed_out.build(shape[:-1] + (2 * self.units,))
        self.built = True

    def call(self, x: Any, mask: Any = None, training: Any = None) -> Any:
        length = ops.shape(x)[1]
        allowed = ops.tril(ops.ones((length, length), dtype="bool"))[None]  # step i sees steps j <= i
        if mask is not None:
            allowed = ops.logical_and(allowed, ops.expand_dims(mask, 1))  # ... that are real events
        a = self.norm_attention(x)
        x = x + self.drop(self.attention(a, a, attention_mask=allowed, training=training), training=training)
        f = self.feed_out(self.feed_hidden(self.norm_feed(x)))
        return x + self.drop(f, training=training)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "heads": self.heads, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="clickstream")
class StepPosition(layers.Layer):
    """A learned vector per distance from the newest step (left padding: the newest is always the last)."""

    def __init__(self, units: int, max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True
        self.units, self.max_length = units, max_length
        self.position = layers.Embedding(max_length, units)

    def build(self, input_shape: Any) -> None:
        self.position.build((None,))
        self.built = True

    def call(self, x: Any) -> Any:
        length = ops.shape(x)[1]
        distance = ops.minimum(ops.arange(length - 1, -1, -1), self.max_length - 1)
        return x + self.position(distance)[None]

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "max_length": self.max_length}


def sequence_layers(config: NetworkConfig, states: Any, mask: Any) -> Any:
    """The per-step states (B, T, units) of the window's inputs under ``config.arch``; layer names are what the
    serving export reads (``lstm_i``, ``gru_i``; ``transformer_input``, ``transformer_position``,
    ``transformer_i``, ``transformer_norm``)."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"architecture {config.arch!r}: one of {', '.join(ARCHITECTURES)}")
    if config.arch == "transformer":
        states = layers.Dense(config.lstm_units, name="transformer_input")(states)
        states = StepPosition(config.lstm_units, config.window_length, name="transformer_position")(states)
        for i in range(config.lstm_layers):
            states = CausalSelfAttention(config.lstm_units, dropout=config.dropout, name=f"transformer_{i}")(
                states, mask=mask)
        return layers.LayerNormalization(name="transformer_norm")(states)
    recurrent = layers.LSTM if config.arch == "lstm" else layers.GRU
    for i in range(config.lstm_layers):
        states = recurrent(config.lstm_units, return_sequences=True, dropout=config.dropout,
                           name=f"{config.arch}_{i}")(states, mask=mask)
    return states


@keras.saving.register_keras_serializable(package="clickstream")
class PaddingMask(layers.Layer):
    """True at real events, False at padding (event type index 0)."""

    def call(self, event_type: Any) -> Any:
        return ops.not_equal(event_type, 0)


@keras.saving.register_keras_serializable(package="clickstream")
class NewestSteps(layers.Layer):
    """The newest ``count`` steps of a left-padded sequence (all of it when it is shorter)."""

    def __init__(self, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = count

    def call(self, sequence: Any) -> Any:
        return sequence[:, -self.count:]

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count": self.count}


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
    """Serving network: window inputs (any length) -> category_gen, attention, gate, event_type, purchase."""
    category = keras.Input((None,), dtype="int32", name="category")
    event_type = keras.Input((None,), dtype="int32", name="event_type")
    steps = keras.Input((None, N_STEP_FEATURES), dtype="float32", name="steps")
    x = layers.Concatenate()([
        layers.Embedding(config.n_categories, config.category_dim, name="category_embedding")(category),
        layers.Embedding(config.n_event_types, config.event_type_dim, name="event_type_embedding")(event_type),
        steps,
    ])
    mask = PaddingMask(name="mask")(event_type)  # padded steps are skipped by the LSTM and the attention
    # with recurrent_steps set below N the LSTM reads only the newest steps; the pointer still reads all of them
    short = 0 < config.recurrent_steps < config.window_length
    if short:
        states = NewestSteps(config.recurrent_steps, name="recent_steps")(x)
        recent_mask = NewestSteps(config.recurrent_steps, name="recent_mask")(mask)
    else:
        states, recent_mask = x, mask
    states = sequence_layers(config, states, recent_mask)
    newest = LastStep(name="last_state")(states)
    last = layers.Dropout(config.dropout)(newest)
    # the pointer's keys: LSTM states where the LSTM ran over the whole window, else the step inputs themselves
    # (category and type embeddings, time and repetition features)
    keys = x if short else states
    attention = CopyAttention(config.lstm_units, config.window_length, name="attention")(
        [keys, steps, mask, newest])
    summary = WindowSummary(config.n_event_types, name="window_summary")([event_type, steps, mask])
    intent = layers.Concatenate(name="intent_inputs")([last, summary])
    intent = layers.Dense(config.intent_units, activation="relu", name="intent_hidden")(intent)
    outputs = {
        "category_gen": layers.Dense(config.n_categories, activation="softmax", name="category_gen")(last),
        "attention": attention,
        "gate": layers.Dense(1, activation="sigmoid", name="gate")(last),
        "event_type": layers.Dense(config.n_event_types - 1, activation="softmax", name="event_type_head")(intent),
        "purchase": layers.Dense(1, activation="sigmoid", name="purchase_head")(intent),
    }
    return keras.Model([category, event_type, steps], outputs, name="next_intent")


def build_training_model(network: keras.Model) -> keras.Model:
    """Wraps the network with the probability of the true next category, p(target), as an output.

    Extra inputs: ``target`` (category index of the next event) and ``copy_match`` (1 where a window step
    has the same raw category as the next event, so that out-of-vocabulary categories can be copied too).
    """
    category = keras.Input((None,), dtype="int32", name="category")
    event_type = keras.Input((None,), dtype="int32", name="event_type")
    steps = keras.Input((None, N_STEP_FEATURES), dtype="float32", name="steps")
    target = keras.Input((), dtype="int32", name="target")
    copy_match = keras.Input((None,), dtype="float32", name="copy_match")
    out = network([category, event_type, steps])

    def target_probability(args: list[Any]) -> Any:
        gen, attention, gate, tgt, match = args
        # an out-of-vocabulary truth is only reachable by copying it from the window: the generator's OOV slot
        # is never shown to anyone, so rewarding it would teach the gate to trust a sink instead of the pointer
        p_gen = ops.take_along_axis(gen, ops.expand_dims(tgt, -1), axis=-1)
        p_gen = ops.where(ops.expand_dims(tgt, -1) > 1, p_gen, 0.0)
        p_copy = ops.sum(attention * match, axis=-1, keepdims=True)
        return gate * p_gen + (1.0 - gate) * p_copy

    p_target = layers.Lambda(target_probability, name="next_category")(
        [out["category_gen"], out["attention"], out["gate"], target, copy_match])
    event_type_out = layers.Identity(name="next_event_type")(out["event_type"])
    purchase_out = layers.Identity(name="purchase")(out["purchase"])
    return keras.Model([category, event_type, steps, target, copy_match],
                       {"next_category": p_target, "next_event_type": event_type_out, "purchase": purchase_out})


def negative_log_likelihood(_: Any, p_target: Any) -> Any:
    """Loss of the next-category output, which already is the probability of the truth."""
    return -ops.log(ops.clip(p_target, 1e-7, 1.0))
