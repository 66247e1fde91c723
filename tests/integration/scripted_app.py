"""The worker's app with a purchase probability scripted by the click's category, so that audience tests
know which click crosses the threshold (``faust -A tests.integration.scripted_app worker``).

A window whose newest category is ``buy-hi`` gets purchase probability 0.9, ``buy-mid`` 0.3, ``buy-lo``
0.05; any other window keeps the model's probability. Everything else is the real predictor.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model import predictor as predictor_module
from model.window import Window

SCRIPTED = {"buy-hi": 0.9, "buy-mid": 0.3, "buy-lo": 0.05}
_predict = predictor_module.Predictor.predict


def scripted_predict(self: Any, windows: Sequence[Window]) -> Any:
    batch = _predict(self, windows)
    probability = np.array(batch.purchase_probability, dtype=np.float32, copy=True)
    for i, window in enumerate(windows):
        if window.categories[-1] in SCRIPTED:
            probability[i] = SCRIPTED[window.categories[-1]]
    batch.purchase_probability = probability
    return batch


predictor_module.Predictor.predict = scripted_predict  # type: ignore[method-assign]

from streams.app import app  # noqa: E402,F401
