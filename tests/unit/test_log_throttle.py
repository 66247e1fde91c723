from __future__ import annotations

import logging

from core.log_throttle import ThrottleRepeats


def record(msg: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", level, "f.py", 1, msg, args, None)


def test_repeats_pass_once_per_interval_with_a_count() -> None:
    now = [0.0]
    f = ThrottleRepeats(interval_s=10, clock=lambda: now[0])
    passed = []
    for i in range(1000):  # 1,000 failed connection attempts over 20 s
        now[0] = i * 0.02
        r = record("Unable to connect to %s", logging.ERROR, f"node-{i % 3}")
        if f.filter(r):
            passed.append(r.getMessage())
    assert len(passed) == 2
    assert passed[0] == "Unable to connect to node-0"
    assert passed[1].endswith("(499 more like this in the last 10s)")
    assert f.filter(record("something else"))  # other messages are not held back
    assert all(f.filter(record("progress", logging.INFO)) for _ in range(5))  # nor INFO lines
