"""The typed messages the worker derives from its predictions (``schemas/category_demand.avsc``,
``schemas/audience.avsc``): closed category-demand windows and marketing audience entries.

Built in one place each: :class:`CategoryDemand` by ``streams/demand.py``, :class:`AudienceEntry` by
``streams/audience.py``; the codec converts them at the edges like :mod:`core.records`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True, slots=True)
class CategoryDemand:
    """Predicted demand for one category in one closed tumbling event-time window, from one source partition.

    The worker that owns a partition of the clicks sees only that partition's users, so a window's demand is
    the sum of its records over ``partitions`` source partitions (``clickstream demand`` adds them up).
    """

    SCHEMA: ClassVar[str] = "category_demand"

    category_id: str
    window_size_s: int
    window_start_ms: int
    expected_visits: float  # sum of the category's scores over the predictions made in the window
    distinct_users: int  # users with the category among their predicted next categories
    expected_purchases: float  # sum of purchase probability x category score
    predictions: int  # predictions that ranked the category (summands of expected_visits)
    partition: int
    partitions: int
    complete: bool  # False: the worker (re)started or got the partition while the window was open
    closed_at_ms: int

    @property
    def key(self) -> bytes:
        return self.category_id.encode()

    @property
    def window_end_ms(self) -> int:
        return self.window_start_ms + self.window_size_s * 1000

    def to_avro(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies, and costs four times the Avro encoding itself
        return {"category_id": self.category_id, "window_size_s": self.window_size_s,
                "window_start_ms": self.window_start_ms, "expected_visits": self.expected_visits,
                "distinct_users": self.distinct_users, "expected_purchases": self.expected_purchases,
                "predictions": self.predictions, "partition": self.partition, "partitions": self.partitions,
                "complete": self.complete, "closed_at_ms": self.closed_at_ms}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> CategoryDemand:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return self.to_avro()


@dataclasses.dataclass(frozen=True, slots=True)
class AudienceEntry:
    """A user whose purchase probability crossed the audience threshold, with the reason: the probability,
    the predicted top categories and the click whose prediction crossed it."""

    SCHEMA: ClassVar[str] = "audience"

    user_id: str
    session_id: str
    purchase_probability: float
    threshold: float
    top_categories: tuple[tuple[str, float], ...]
    event_id: str
    event_time_ms: int
    predicted_at_ms: int
    model_version: str

    @property
    def key(self) -> bytes:
        return self.user_id.encode()

    def to_avro(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "session_id": self.session_id,
                "purchase_probability": self.purchase_probability, "threshold": self.threshold,
                "top_categories": [{"category_id": c, "score": s} for c, s in self.top_categories],
                "event_id": self.event_id, "event_time_ms": self.event_time_ms,
                "predicted_at_ms": self.predicted_at_ms, "model_version": self.model_version}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> AudienceEntry:
        return cls(user_id=d["user_id"], session_id=d["session_id"], purchase_probability=d["purchase_probability"],
                   threshold=d["threshold"],
                   top_categories=tuple((t["category_id"], t["score"]) for t in d["top_categories"]),
                   event_id=d["event_id"], event_time_ms=d["event_time_ms"], predicted_at_ms=d["predicted_at_ms"],
                   model_version=d["model_version"])

    def to_json(self) -> dict[str, Any]:
        return self.to_avro()
