"""Predictors that fail or answer on purpose, built by name in the inference engine of either mode
(``CLICKSTREAM_PREDICTOR_FACTORY=tests.integration.faults:FaultyPredictor``).

``FaultyPredictor`` reads CLICKSTREAM_TEST_FAULT, a comma-separated list of:
- ``poison``: it raises on any window whose newest category is ``poison``;
- ``broken-after-N``: after N successful calls, it raises on every call;
- ``hang-after-N``: after N successful calls, it never returns (a stalled worker).

``ScriptedPredictor`` sets the purchase probability by the click's category, so that audience tests know which
click crosses the threshold: a window whose newest category is ``buy-hi`` gets 0.9, ``buy-mid`` 0.3, ``buy-lo``
0.05; any other window keeps the model's probability.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.predictor import Predictor
from model.window import Window

SCRIPTED = {"buy-hi": 0.9, "buy-mid": 0.3, "buy-lo": 0.05}


class FaultyPredictor(Predictor):
    calls = 0

    def predict(self, windows: Sequence[Window]) -> Any:
        faults = os.environ.get("CLICKSTREAM_TEST_FAULT", "").split(",")
        if "poison" in faults and any(w.categories[-1] == "poison" for w in windows):
            raise RuntimeError("injected failure on a poison window")
        for fault in faults:
            if fault.startswith(("broken-after-", "hang-after-")):
                FaultyPredictor.calls += 1
                if FaultyPredictor.calls > int(fault.rsplit("-", 1)[1]):
                    if fault.startswith("broken-"):
                        raise RuntimeError("injected failure: the predictor is broken")
                    threading.Event().wait()  # never returns; the agent awaits the reply
        return super().predict(windows)


class ScriptedPredictor(Predictor):
    def predict(self, windows: Sequence[Window]) -> Any:
        batch = super().predict(windows)
        probability = np.array(batch.purchase_probability, dtype=np.float32, copy=True)
        for i, window in enumerate(windows):
            if window.categories[-1] in SCRIPTED:
                probability[i] = SCRIPTED[window.categories[-1]]
        batch.purchase_probability = probability
        return batch
