"""The hand-off from the worker to the model: one user's recent events (numpy only, no TensorFlow).

The worker builds a :class:`Window` from its stored window (``streams/window.py``), evaluation builds one
from log columns; :meth:`model.predictor.Predictor.predict` takes a batch of them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """A user's most recent events, oldest first."""

    categories: Sequence[str]  # raw category ids
    event_types: np.ndarray  # int8 stable codes of core.events
    times_ms: np.ndarray  # int64 event times

    def __len__(self) -> int:
        return len(self.categories)
