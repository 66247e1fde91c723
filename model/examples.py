"""Training examples: one per target event, its window being the events of the same user just before it."""
from __future__ import annotations

import dataclasses

import numpy as np

from model.data import EventLog, purchase_labels, user_start_of
from model.features import FeatureSpec, encode_windows, window_columns, window_index
from model.purchase import FEATURES, purchase_features


@dataclasses.dataclass
class LogColumns:
    """Per-event columns of a log in the form the feature function and the labels need."""

    log: EventLog
    spec: FeatureSpec
    category_index: np.ndarray
    raw_category_code: np.ndarray  # equal codes = equal raw category ids, in vocabulary or not
    user_start: np.ndarray
    purchase_soon: np.ndarray

    @classmethod
    def of(cls, log: EventLog, spec: FeatureSpec, purchase_horizon: int) -> LogColumns:
        return cls(log=log, spec=spec, category_index=spec.category_index(log.category_ids),
                   raw_category_code=np.unique(log.category_ids, return_inverse=True)[1].astype(np.int64),
                   user_start=user_start_of(log), purchase_soon=purchase_labels(log, purchase_horizon))

    def training_arrays(self, targets: np.ndarray, length: int) -> tuple[dict[str, np.ndarray],
                                                                        dict[str, np.ndarray]]:
        """(inputs, labels) of the training model for the given target events."""
        index = window_index(targets, self.user_start[targets], length)
        x = encode_windows(self.category_index, self.raw_category_code, self.log.event_types, self.log.times_ms,
                           index, self.spec)
        codes = self.raw_category_code
        x["target"] = self.category_index[targets]
        x["copy_match"] = ((codes[np.maximum(index, 0)] == codes[targets][:, None]) & (index >= 0)).astype(np.float32)
        y = {"next_category": np.zeros(len(targets), dtype=np.float32),  # unused: the output is p(truth)
             "next_event_type": self.log.event_types[targets].astype(np.int32),
             "purchase": self.purchase_soon[targets].astype(np.float32)}
        return x, y

    def purchase_signals(self, targets: np.ndarray, length: int, chunk: int = 2048) -> np.ndarray:
        """:func:`model.purchase.purchase_features` of the target events' windows, as the predictor computes
        them (in chunks: the features compare every pair of a window's steps)."""
        parts = []
        for lo in range(0, len(targets), chunk):
            part = targets[lo: lo + chunk]
            columns = window_columns(self.category_index, self.raw_category_code, self.log.event_types,
                                     self.log.times_ms, window_index(part, self.user_start[part], length))
            parts.append(purchase_features(columns["code"], columns["event_type"], columns["time_ms"]))
        return np.concatenate(parts) if parts else np.zeros((0, len(FEATURES) - 1))
