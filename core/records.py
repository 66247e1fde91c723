"""The typed messages of the two Avro contracts (``schemas/click.avsc``, ``schemas/prediction.avsc``).

Each record is built in one place: a :class:`Click` by a log reader, the synthetic generator or the codec's
decoder; a :class:`Prediction` by the worker's batch logic. The codec converts them at the edges
(``to_avro`` / ``from_avro``). Frozen slotted dataclasses: building one costs about a microsecond, against
~5 µs to decode a click, so typing the hot path costs little (``python -m benchmarks throughput``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True, slots=True)
class Click:
    """One shopper interaction (see ``schemas/click.avsc``)."""

    SCHEMA: ClassVar[str] = "click"

    event_id: str
    user_id: str
    item_id: str
    category_id: str
    event_type: str
    event_time_ms: int
    session_id: str | None = None
    price: float | None = None
    user_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> bytes:
        """The Kafka message key of this click (and of its predictions): the user id."""
        return self.user_id.encode()

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "user_id": self.user_id, "session_id": self.session_id,
                "item_id": self.item_id, "category_id": self.category_id, "event_type": self.event_type,
                "event_time_ms": self.event_time_ms, "price": self.price,
                "user_attributes": dict(self.user_attributes)}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Click:
        return cls(event_id=d["event_id"], user_id=d["user_id"], item_id=d["item_id"],
                   category_id=d["category_id"], event_type=d["event_type"], event_time_ms=d["event_time_ms"],
                   session_id=d.get("session_id"), price=d.get("price"),
                   user_attributes=d.get("user_attributes") or {})


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """Where the worker spent the time of a prediction's micro-batch."""

    batch_size: int
    batch_wait_ms: float
    window_ms: float
    inference_ms: float

    def to_avro(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "batch_wait_ms": self.batch_wait_ms, "window_ms": self.window_ms,
                "inference_ms": self.inference_ms}


@dataclasses.dataclass(frozen=True, slots=True)
class Driver:
    """A window event that drove a prediction's top category: the probability the pointer copied from it."""

    position: int  # in the window the prediction was made from, 0 = its oldest event
    category_id: str
    event_type: str
    event_time_ms: int
    weight: float  # (1 - gate) x attention of this event: its share of the top category's network probability

    def to_avro(self) -> dict[str, Any]:
        return {"position": self.position, "category_id": self.category_id, "event_type": self.event_type,
                "event_time_ms": self.event_time_ms, "weight": self.weight}


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """The predicted next intent of a user, made right after one of their clicks (``prediction.avsc``)."""

    SCHEMA: ClassVar[str] = "prediction"

    event_id: str
    user_id: str
    event_time_ms: int
    predicted_at_ms: int
    model_version: str
    top_categories: tuple[tuple[str, float], ...]
    next_event_type: Mapping[str, float]
    purchase_probability: float
    window_length: int
    timing: Timing | None = None
    drivers: tuple[Driver, ...] | None = None  # only when the worker explains its predictions

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "user_id": self.user_id, "event_time_ms": self.event_time_ms,
                "predicted_at_ms": self.predicted_at_ms, "model_version": self.model_version,
                "top_categories": [{"category_id": c, "score": s} for c, s in self.top_categories],
                "next_event_type": dict(self.next_event_type),
                "purchase_probability": self.purchase_probability, "window_length": self.window_length,
                "timing": self.timing.to_avro() if self.timing is not None else None,
                "drivers": [d.to_avro() for d in self.drivers] if self.drivers is not None else None}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Prediction:
        timing, drivers = d.get("timing"), d.get("drivers")
        return cls(event_id=d["event_id"], user_id=d["user_id"], event_time_ms=d["event_time_ms"],
                   predicted_at_ms=d["predicted_at_ms"], model_version=d["model_version"],
                   top_categories=tuple((t["category_id"], t["score"]) for t in d["top_categories"]),
                   next_event_type=d["next_event_type"], purchase_probability=d["purchase_probability"],
                   window_length=d["window_length"], timing=Timing(**timing) if timing else None,
                   drivers=tuple(Driver(**x) for x in drivers) if drivers is not None else None)

    def to_json(self) -> dict[str, Any]:
        """The Avro record as plain JSON (what ``clickstream subscribe`` prints)."""
        return self.to_avro()
