"""The worker's app with a Faust consumer that skips clicks (``faust -A tests.integration.holey_app worker``).

Once the agent has handled a batch, the consumer hands on none of the next CLICKSTREAM_TEST_SKIP_COUNT
messages of each clicks partition (each skipped offset is logged, and so is a skipped offset that the
consumer hands on later after all): what Faust's consumer does in the holes
the worker fills from the log (streams/holes.py). Its fetch loop then sees the next offset jump and
acknowledges the skipped ones as a gap, so without the fill the group's commit moves past clicks that got
no prediction.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from faust.transport import consumer as consumer_module

log = logging.getLogger(__name__)
_getmany = consumer_module.Consumer.getmany
_skipped: Counter = Counter()
_offsets: set = set()


async def holey_getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    from streams import metrics

    count = int(os.environ["CLICKSTREAM_TEST_SKIP_COUNT"])
    clicks = os.environ["CLICKSTREAM_CLICKS_TOPIC"]
    async for tp, message in _getmany(self, timeout):
        # clicks counted once a batch was delivered, in either mode (the child's counters are not here)
        if (tp.topic == clicks and _skipped[tp] < count
                and (metrics.REGISTRY.get_sample_value("clickstream_clicks_total") or 0) > 0):
            _skipped[tp] += 1
            log.info("holey_app: skipped %s[%d] offset %d", tp.topic, tp.partition, message.offset)
            _offsets.add((tp, message.offset))
            continue
        if (tp, message.offset) in _offsets:
            log.info("holey_app: delivered again %s[%d] offset %d", tp.topic, tp.partition, message.offset)
        yield tp, message


consumer_module.Consumer.getmany = holey_getmany  # type: ignore[method-assign]

from streams.app import app  # noqa: E402,F401
