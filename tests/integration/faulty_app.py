"""The worker's app with a predictor that fails on purpose (``faust -A tests.integration.faulty_app worker``).

CLICKSTREAM_TEST_FAULT, a comma-separated list of:
- ``poison``: the predictor raises on any window whose newest category is ``poison``;
- ``broken-after-N``: after N successful calls, the predictor raises on every call;
- ``hang-after-N``: after N successful calls, the predictor never returns (a stalled worker);
- ``block-loop-after-N``: after N successful calls, the event loop is blocked for good (a frozen worker).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from model import predictor as predictor_module
from model.window import Window

_predict = predictor_module.Predictor.predict
_calls = 0


def faulty_predict(self: Any, windows: Sequence[Window]) -> Any:
    global _calls
    faults = os.environ.get("CLICKSTREAM_TEST_FAULT", "").split(",")
    if "poison" in faults and any(w.categories[-1] == "poison" for w in windows):
        raise RuntimeError("injected failure on a poison window")
    for fault in faults:
        if fault.startswith("broken-after-"):
            _calls += 1
            if _calls > int(fault.removeprefix("broken-after-")):
                raise RuntimeError("injected failure: the predictor is broken")
        if fault.startswith("hang-after-"):
            _calls += 1
            if _calls > int(fault.removeprefix("hang-after-")):
                threading.Event().wait()  # the inference thread waits forever; the agent awaits it
        if fault.startswith("block-loop-after-"):
            _calls += 1
            if _calls > int(fault.removeprefix("block-loop-after-")):
                app.loop.call_soon_threadsafe(time.sleep, 10**6)  # the loop runs this next, and nothing after it
    return _predict(self, windows)


predictor_module.Predictor.predict = faulty_predict  # type: ignore[method-assign]

from streams.app import app  # noqa: E402,F401
