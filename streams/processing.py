"""The worker's per-batch logic, free of Faust: validation, window updates, prediction records."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from schemas.codec import AvroCodec
from streams.errors import DecodeError
from streams.window import UserWindow

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 256
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01: earlier clicks are corrupt, not history
MAX_FUTURE_MS = 24 * 3600 * 1000
ID_FIELDS = ("event_id", "user_id", "item_id", "category_id")


def check_click(value: Any, codec: AvroCodec, now_ms: int) -> tuple[dict[str, Any] | None, str | None]:
    """(click, None) for a valid click, else (None, reason) for the dead-letter topic."""
    try:
        click = codec.decode(value)
    except DecodeError as exc:
        return None, f"undecodable: {exc}"
    for field in ID_FIELDS:
        if not click[field].strip():
            return None, f"missing {field}"
    for field in (*ID_FIELDS, "session_id"):
        if click[field] is not None and len(click[field]) > MAX_FIELD_CHARS:
            return None, f"{field} longer than {MAX_FIELD_CHARS} characters"
    if len(click["user_attributes"]) > 32 or any(len(k) + len(v) > MAX_FIELD_CHARS
                                                 for k, v in click["user_attributes"].items()):
        return None, "user_attributes too large"
    t = click["event_time_ms"]
    if t < MIN_EVENT_TIME_MS or t > now_ms + MAX_FUTURE_MS:
        return None, f"absurd event time {t}"
    return click, None


def update_windows(clicks: Sequence[dict[str, Any]], load: Callable[[bytes], bytes | None],
                   max_events: int) -> tuple[list[Any], dict[bytes, UserWindow]]:
    """Add each click to its user's window; return the window each click is predicted from, and the
    changed windows by user key. A click already in the window (re-delivered) is not added twice."""
    from model.predictor import Window

    windows: dict[bytes, UserWindow] = {}
    snapshots = []
    for click in clicks:
        key = click["user_id"].encode()
        window = windows.get(key)
        if window is None:
            stored = load(key)
            window = UserWindow.empty()
            if stored is not None:
                try:
                    window = UserWindow.unpack(stored)
                except DecodeError as exc:
                    log.warning("window of user %r is corrupt (%s): starting a new one", click["user_id"], exc)
            windows[key] = window
        window.add(click["event_id"], click["category_id"], click["event_type"], click["event_time_ms"],
                   max_events)
        snapshots.append(Window(*window.model_window()))
    return snapshots, windows


def prediction_records(clicks: Sequence[dict[str, Any]], batch: Any, model_version: str, predicted_at_ms: int,
                       timing: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Prediction record per click, in click order."""
    # 'unknown' is never a training target: the distribution over the real types is renormalised to 1
    known = [j for j, n in enumerate(batch.event_types) if n != "unknown"]
    names = [batch.event_types[j] for j in known]
    probs = batch.event_type_probs[:, known]
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    records = []
    for i, click in enumerate(clicks):
        records.append({
            "event_id": click["event_id"], "user_id": click["user_id"], "event_time_ms": click["event_time_ms"],
            "predicted_at_ms": predicted_at_ms, "model_version": model_version,
            "top_categories": [{"category_id": c, "score": s} for c, s in batch.top_categories[i]],
            "next_event_type": dict(zip(names, probs[i].tolist())),
            "purchase_probability": float(batch.purchase_probability[i]),
            "window_length": int(batch.window_lengths[i]), "timing": timing[i],
        })
    return records


def stale_keys(items: Iterable[tuple[bytes, bytes | None]], stream_time_ms: int, ttl_ms: int) -> list[bytes]:
    """Keys of packed windows whose newest event is older than ``ttl_ms`` before ``stream_time_ms``."""
    horizon = stream_time_ms - ttl_ms
    return [key for key, value in items if value is not None and UserWindow.newest_ms_of(value) < horizon]
