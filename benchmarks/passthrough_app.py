"""Framework ceiling for the throughput benchmark: a Faust agent that forwards every click, nothing else.

Run by ``python -m benchmarks throughput`` as ``faust -A benchmarks.passthrough_app worker`` with the same
settings as the real worker (topics from CLICKSTREAM_*; output to CLICKSTREAM_PREDICTIONS_TOPIC).
"""
from __future__ import annotations

import logging

import faust

from core.settings import load_settings

settings = load_settings()
app = faust.App(settings.app_id, broker=settings.faust_broker, broker_credentials=settings.faust_credentials(),
                topic_partitions=settings.partitions, producer_acks=-1, producer_linger_ms=5,
                producer_max_batch_size=512 * 1024, stream_buffer_maxsize=max(4096, 4 * settings.batch_max),
                broker_max_poll_records=max(1000, settings.batch_max), broker_commit_interval=1.0)
_raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
clicks = app.topic(settings.clicks_topic, **_raw)
out = app.topic(settings.predictions_topic, **_raw)
log = logging.getLogger(__name__)


@app.agent(clicks)
async def forward(stream: faust.StreamT) -> None:
    log.info("shapes warmed: passthrough ready")  # the line the benchmark waits for
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        for event in events:
            await app.producer.send(out.get_topic_name(), event.message.key, event.message.value, None, None, None)
