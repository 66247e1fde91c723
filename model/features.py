"""The one mapping from windows of events to model inputs, used by training and by the streaming predictor
(which takes :func:`window_columns` and computes the step features in its compiled function with
``model.serving.step_features``, the TensorFlow twin of :func:`step_features`, held equal by a test).

A window is a user's most recent events, oldest first, left-padded to a fixed length so that the newest event
is always the last step. Inputs per step: category index (0 = padding, 1 = out of vocabulary), event type
index (0 = padding), and nine step features:

- time: hour of day and day of week as sin/cos; log1p(seconds since the previous event of the window) and
  log1p(seconds before the newest event), both / ``gap_scale`` (the first is 0 for the window's first event,
  in training and in serving alike);
- repetition, which lets the network point back at the user's own categories: the step's category equals the
  newest one; log1p(times its category occurs in the window); it is the newest occurrence of its category.
  These compare raw category ids (through per-event codes, equal code = equal raw id), so they work for
  categories outside the vocabulary too.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from core.events import EVENT_TYPES

PAD, OOV = 0, 1
STEP_FEATURES = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "gap", "age", "same_as_newest",
                 "log_count", "newest_occurrence")  # the order of the last axis of ``steps``
N_STEP_FEATURES = len(STEP_FEATURES)
GAP_SCALE = 10.0  # gap and age are log1p(seconds) / GAP_SCALE
DAY_MS = 86_400_000


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What the features are, stored in the model manifest so serving rebuilds exactly the same inputs."""

    categories: tuple[str, ...]  # vocabulary: category i has index i + 2
    event_types: tuple[str, ...] = EVENT_TYPES  # input index of type i is i + 1; the head's output i
    gap_scale: float = GAP_SCALE

    @classmethod
    def fit(cls, category_ids: Iterable[str], min_count: int = 1, max_size: int = 50_000) -> FeatureSpec:
        """Vocabulary of the training events: categories seen ``min_count`` times, most frequent first."""
        counts = Counter(category_ids)
        vocab = [c for c, n in counts.most_common(max_size) if n >= min_count]
        return cls(categories=tuple(vocab))

    @property
    def n_categories(self) -> int:
        """Size of the category index space, padding and OOV included."""
        return len(self.categories) + 2

    @property
    def n_event_types(self) -> int:
        return len(self.event_types) + 1

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i + 2 for i, c in enumerate(self.categories)}

    @cached_property
    def index_to_category(self) -> np.ndarray:
        """Raw category id of each index ('' for padding and OOV)."""
        return np.asarray(["", "", *self.categories], dtype=object)

    def category_index(self, raw_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        return np.fromiter(map(self._index.get, raw_ids, itertools.repeat(OOV)), dtype=np.int32, count=len(raw_ids))

    def to_json(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "event_types": list(self.event_types),
                "gap_scale": self.gap_scale}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(categories=tuple(data["categories"]), event_types=tuple(data["event_types"]),
                   gap_scale=float(data["gap_scale"]))


class CategoryCodes(dict[str, int]):
    """Raw category id -> an integer code, one dict lookup per event: the category's input index for the
    vocabulary, a new code past the index space for any other id. Equal codes exactly for equal raw ids,
    which is all the repetition features and the drivers compare (within one table)."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__(spec._index)  # the vocabulary's input indexes, then codes for other ids
        self.vocabulary = spec.n_categories
        self._new = itertools.count(self.vocabulary)  # next() is atomic: a code is never handed out twice

    def __missing__(self, raw: str) -> int:
        code = self[raw] = next(self._new)
        return code

    def input_index(self, codes: np.ndarray) -> np.ndarray:
        """The network's category input of each code: out of vocabulary (OOV) past the index space."""
        return np.where(codes < self.vocabulary, codes, OOV).astype(np.int32)


def window_index(ends: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(B, length) positions into flat event columns: the ``length`` events before each end (exclusive),
    not before the window's start; -1 where the window is shorter (left padding)."""
    offsets = np.arange(-length, 0, dtype=np.int64)
    index = ends.astype(np.int64)[:, None] + offsets[None, :]
    return np.where(index >= starts.astype(np.int64)[:, None], index, -1)


def encode_windows(category_index: np.ndarray, category_codes: np.ndarray, event_types: np.ndarray,
                   times_ms: np.ndarray, index: np.ndarray, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Model inputs for windows given as (B, T) positions into flat per-event columns (-1 = padding).

    ``category_index`` comes from :meth:`FeatureSpec.category_index`; ``category_codes`` are integers (never
    -1) that are equal exactly where raw category ids are equal; ``event_types`` are positions in
    ``spec.event_types`` (input index = position + 1, 0 being padding).
    """
    columns = window_columns(category_index, category_codes, event_types, times_ms, index)
    return {"category": columns["category"], "event_type": columns["event_type"],
            "steps": step_features(columns["code"], columns["event_type"], columns["time_ms"], spec.gap_scale)}


def window_columns(category_index: np.ndarray, category_codes: np.ndarray, event_types: np.ndarray,
                   times_ms: np.ndarray, index: np.ndarray) -> dict[str, np.ndarray]:
    """The (B, T) columns the step features are computed from: ``category`` and ``event_type`` (the network's
    inputs, 0 at padding), ``code`` (-1 at padding) and ``time_ms`` (0 at padding). The streaming predictor
    hands these to its compiled function, which computes the step features itself (``model/serving.py``)."""
    valid = index >= 0
    safe = np.where(valid, index, 0)
    return {"category": np.where(valid, category_index[safe], PAD).astype(np.int32),
            "event_type": np.where(valid, event_types[safe].astype(np.int32) + 1, PAD).astype(np.int32),
            "code": np.where(valid, category_codes[safe], -1),
            "time_ms": np.where(valid, times_ms[safe], 0).astype(np.int64)}


def step_features(codes: np.ndarray, event_type: np.ndarray, t: np.ndarray, gap_scale: float) -> np.ndarray:
    """(B, T, N_STEP_FEATURES) from the columns of :func:`window_columns`; a step is padding where its
    ``event_type`` is 0. ``model.serving.step_features`` is the same function in TensorFlow, for serving
    (``tests/unit/test_features.py`` holds the two equal)."""
    valid = event_type != PAD
    hour = (t % DAY_MS).astype(np.float32) * np.float32(2 * math.pi / DAY_MS)
    # 1970-01-01 was a Thursday: +3 days puts Monday at 0
    dow = ((t // DAY_MS + 3) % 7).astype(np.float32) * np.float32(2 * math.pi / 7)
    gap_ms = np.zeros_like(t)
    gap_ms[:, 1:] = np.where(valid[:, 1:] & valid[:, :-1], t[:, 1:] - t[:, :-1], 0)
    scale = np.float32(gap_scale)
    gap = np.log1p(np.maximum(gap_ms, 0).astype(np.float32) / 1000.0) / scale
    age = np.log1p(np.maximum(t[:, -1:] - t, 0).astype(np.float32) / 1000.0) / scale
    count, newest_occurrence = _repetitions(codes)
    same_as_newest = codes == codes[:, -1:]
    steps = np.stack([np.sin(hour), np.cos(hour), np.sin(dow), np.cos(dow), gap, age,
                      same_as_newest, np.log1p(count), newest_occurrence], axis=-1).astype(np.float32)
    steps *= valid[..., None]
    return steps


def _repetitions(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step of (B, T) codes: how often its code occurs in its row, and whether no later step repeats it.

    A stable sort of each row puts equal codes together in time order, so a run's length is the count and
    its last member the newest occurrence: O(T log T) per row instead of comparing every pair of steps.
    Padding (code -1, which no category code equals) only groups with padding, and is masked by the caller.
    """
    b, t = codes.shape
    order = np.argsort(codes, axis=1, kind="stable")
    ordered = np.take_along_axis(codes, order, axis=1)
    boundary = ordered[:, 1:] != ordered[:, :-1]
    starts = np.ones((b, t), dtype=bool)
    starts[:, 1:] = boundary
    ends = np.ones((b, t), dtype=bool)
    ends[:, :-1] = boundary
    run = np.cumsum(starts.ravel()) - 1  # run number over the whole batch (each row starts a run)
    count_sorted = np.bincount(run)[run].reshape(b, t)
    count = np.empty_like(count_sorted)
    newest = np.empty_like(ends)
    np.put_along_axis(count, order, count_sorted, axis=1)
    np.put_along_axis(newest, order, ends, axis=1)
    return count, newest
