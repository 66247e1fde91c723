"""The worker's web server (Faust's, bound to ``CLICKSTREAM_WEB_BIND``, 127.0.0.1 by default).

- ``/metrics``: Prometheus metrics (``streams/metrics.py``);
- ``/live``: 200 while the event loop answers;
- ``/ready``: 200 once the model is loaded and warm, partitions are assigned and tables are recovered;
- ``/users/{user_id}/intent``: the user's current predicted intent, answered by the worker that owns the
  user's partition (Faust's table routing forwards the request there); with pseudonymous ids
  (``CLICKSTREAM_USER_ID_KEY``) the id in the path is the raw one, and the answer names the pseudonym. It is
  predicted from the user's stored window, which is what the latest prediction was made from: no extra table
  write per click.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from faust.exceptions import SameNode
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.events import EVENT_TYPES
from core.records import Click
from streams import metrics
from streams.agents import runtime
from streams.app import app, settings
from streams.batch import predictions_of
from streams.topics import user_to_window
from streams.window import UserWindow


def is_ready() -> bool:
    recovery = app.tables.recovery
    return (runtime.model_ready and not app.rebalancing and recovery.completed.is_set()
            and bool(app.consumer.assignment()))


def consumer_lags() -> Iterator[tuple[str, int, int]]:
    consumer = app.consumer
    for tp in sorted(consumer.assignment()):
        highwater = consumer.highwater(tp)
        position = consumer._read_offset.get(tp)  # Faust's next offset to read (private; read-only here)
        if highwater is not None and position is not None:
            yield tp.topic, tp.partition, max(0, highwater - position)


metrics.REGISTRY.register(metrics.LagCollector(consumer_lags))


@app.page("/metrics")
async def prometheus_metrics(web: Any, request: Request) -> Response:
    metrics.ready.set(1 if is_ready() else 0)
    return web.bytes(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/live")
async def live(web: Any, request: Request) -> Response:
    return web.json({"live": True})


@app.page("/ready")
async def ready(web: Any, request: Request) -> Response:
    ok = is_ready()
    return web.json({"ready": ok, "model_version": runtime.predictor.version if ok else None},
                    status=200 if ok else 503)


user_ids = settings.user_ids()


@app.page("/users/{user_id}/intent")
class UserIntent(View):
    async def get(self, request: Request, user_id: str) -> Response:
        key = user_ids.key_of(user_id)  # the pseudonym, with pseudonymous ids
        try:  # Faust's table routing (as app.table_route does, by the table's key)
            return await app.router.route_req(user_to_window.name, key, self.web, request)
        except SameNode:
            pass
        if not runtime.model_ready:
            return self.json({"error": "the model is not loaded yet"}, status=503)
        packed = user_to_window.get(key.encode())
        if packed is None:
            return self.json({"error": f"no recent events of user {user_id!r}"}, status=404)
        window = UserWindow.unpack(packed)
        batch = await runtime.predict_one(window.model_window())
        # the user's newest stored event stands for the click (windows keep no event ids)
        newest = Click(event_id="", user_id=key, item_id="", category_id=window.categories[-1],
                       event_type=EVENT_TYPES[window.event_types[-1]], event_time_ms=window.newest_ms)
        (prediction,) = predictions_of([newest], batch, runtime.predictor.version, int(time.time() * 1000), [None])
        return self.json(prediction.to_json())
