"""The worker's app with an event loop that stops for good once clicks were handled
(``faust -A tests.integration.faulty_app worker``): what the loop watch (faulthandler) must turn into an exit."""
from __future__ import annotations

import time

from streams import metrics
from streams.app import app


@app.timer(interval=0.5)
async def block_the_loop() -> None:
    if (metrics.REGISTRY.get_sample_value("clickstream_clicks_total") or 0) > 0:
        time.sleep(10**6)  # the loop runs nothing after this
