"""What the running worker shares between its agent and its web views: the predictor and the batch processor.

One :class:`Runtime` per worker process (``streams.agents.runtime``), filled when the agent has loaded and
warmed the model; until then the worker is not ready.
"""
from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from model.window import Window
from streams.batch import BatchProcessor, predict_isolating
from streams.inference import InferenceProcess


@dataclasses.dataclass
class Runtime:
    predictor: Any = None  # model.predictor.Predictor, or the InferenceProcess holding it, once loaded and warm
    processor: BatchProcessor | None = None
    pending: Any = None  # a new model, loaded and warm, that the agent switches to before its next batch
    refused: str | None = None  # why the newest artifact at the model folder was refused (logged once)
    loading: asyncio.Future[None] | None = None  # a model being loaded beside the serving one
    compiling: asyncio.Future[None] | None = None  # the serving model's shapes, compiled between batches
    # in one process (CLICKSTREAM_INFERENCE_PROCESS=false) inference runs here, off the event loop: TensorFlow
    # releases the GIL, so consuming and producing go on
    inference: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference"))

    @property
    def model_ready(self) -> bool:
        return self.predictor is not None

    def switch_to_pending(self) -> str | None:
        """Serve the pending model from now on (called between batches); the version switched from."""
        if self.pending is None or self.processor is None:
            return None
        old, self.predictor, self.pending = self.predictor.version, self.pending, None
        self.processor.model_version = self.predictor.version
        self.processor.window_length = self.predictor.window_length
        return old

    async def infer(self, windows: list[Window]) -> Any:
        """Predict a batch of windows in the inference thread, isolating windows the predictor fails on."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.inference, predict_isolating, self.predictor.predict, windows)

    async def predict_one(self, window: Window) -> Any:
        if isinstance(self.predictor, InferenceProcess):
            return await self.predictor.predict_one(window)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.inference, self.predictor.predict, [window])
