"""Repeated warnings and errors logged once per interval with a count, so a broker outage is a few lines, not
tens of thousands (aiokafka and kafka-python log every failed connection attempt)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottleRepeats(logging.Filter):
    """Lets the first record of each (logger, message template, level) through, then at most one per
    ``interval_s``, which tells how many like it were held back since the last one. INFO and below pass."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._last: dict[tuple[str, object, int], float] = {}
        self._held: dict[tuple[str, object, int], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg, record.levelno)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {now - last:.0f}s)"  # type: ignore[operator]
        return True


def throttle_repeats(logger: logging.Logger | None = None, interval_s: float = 10.0) -> None:
    """Install :class:`ThrottleRepeats` on the handlers of ``logger`` (the root logger by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, ThrottleRepeats) for f in handler.filters):
            handler.addFilter(ThrottleRepeats(interval_s))
