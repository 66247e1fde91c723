"""What the running worker shares between its agent and its web views: the inference engine serving the model.

One :class:`Runtime` per worker process (``streams.agents.runtime``), filled when the agent has loaded and
warmed the model; until then the worker is not ready.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from streams.inference import Inference


@dataclasses.dataclass
class Runtime:
    predictor: Inference | None = None  # the engine serving the model, once loaded and warm
    pending: Inference | None = None  # a new model's engine, warm, that the agent switches to between batches
    refused: str | None = None  # why the newest artifact at the model folder was refused (logged once)
    loading: asyncio.Future[None] | None = None  # a model being loaded beside the serving one

    @property
    def model_ready(self) -> bool:
        return self.predictor is not None

    async def predict_one(self, window: Any) -> Any:
        """One window's prediction (the web view of a user's intent), in turn with the batches."""
        assert self.predictor is not None
        return await self.predictor.predict_one(window)
