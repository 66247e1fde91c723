"""The worker's two dependencies on Faust internals, isolated here and pinned by tests/unit/test_faust_glue.py.

1. ``faust.streams._current_event`` (private): Faust's RocksDB store files a table write under the partition
   of the *current event*, which a micro-batch does not have. :func:`current_event_of` makes it the user's
   own click for the duration of a write, which is what ``Stream`` itself does per event.
2. Message reference counts (public ``Message.incref``): ``Stream.take_events`` acknowledges a batch's
   messages when the batch ends, even when handling it failed. :func:`held` takes one more reference per
   message and gives it back only when the batch was handled, so a failed or cancelled batch is never
   acknowledged: its offsets are not committed and a restarted worker reads it again.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from faust.streams import _current_event


@contextlib.contextmanager
def current_event_of(event: Any | None) -> Iterator[None]:
    """Within the block, Faust's current event is ``event`` (None: no event, so that a table deletes a key
    by its own partition rather than by the partition of whatever event the stream last saw)."""
    token = _current_event.set(weakref.ref(event) if event is not None else None)
    try:
        yield
    finally:
        _current_event.reset(token)


@contextlib.contextmanager
def held(events: Sequence[Any]) -> Iterator[None]:
    """Keep the events' messages unacknowledged unless the block completes."""
    for event in events:
        event.message.incref()
    yield  # an exception (or cancellation) leaves the extra reference in place: no acknowledgement
    for event in events:
        event.message.decref()
