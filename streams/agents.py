"""The agent ``predict_next_intent``: micro-batches of clicks -> windows -> one predictor call -> predictions."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faust.streams import _current_event

from schemas.codec import AvroCodec
from streams.app import app, settings
from streams.processing import check_click, prediction_records, stale_keys, update_windows
from streams.topics import (click_sources, dead_letter_topic, predictions_topic, rekeyed_clicks_topic,
                            user_to_window)

log = logging.getLogger(__name__)

# Inference runs here, off the event loop: TensorFlow releases the GIL, so consuming and producing go on.
inference_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
click_codec = AvroCodec("click", settings.schema_id_click)
prediction_codec = AvroCodec("prediction", settings.schema_id_prediction)
counters = {"clicks": 0, "predictions": 0, "dead_letters": 0, "rekeyed": 0, "batches": 0, "expired": 0}
stream_time_ms = 0  # newest event time this worker has processed: idle expiry is measured against it


def load_predictor() -> Any:
    from model.predictor import Predictor

    predictor = Predictor(settings.model_dir, top_k=settings.top_k, threads=settings.inference_threads,
                          batch_sizes=settings.predictor_batch_sizes, lengths=settings.predictor_lengths)
    log.info("model %s loaded from %s; %d shapes warmed in %.1fs", predictor.version, settings.model_dir,
             len(predictor.batch_sizes) * len(predictor.lengths), predictor.warm_s)
    return predictor


async def send(topic: Any, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
    """Hand a message to the app's producer (partition by key, like every Kafka client).

    Straight to the producer rather than ``topic.send``: Faust's per-message channel bookkeeping costs more
    than the rest of the worker's per-click work (a Faust passthrough agent forwards ~2.8k msgs/s with
    ``topic.send`` and ~4.4k/s this way on 2 cores). Delivery is unchanged: Faust flushes this producer
    before it commits offsets.
    """
    await app.producer.send(topic.get_topic_name(), key, value, None, None, headers)


def set_current_event(event: Any) -> None:
    """Set Faust's current-event context (``faust.streams._current_event``, what Stream itself sets)."""
    _current_event.set(weakref.ref(event) if event is not None else None)


async def send_dead_letter(message: Any, reason: str) -> None:
    counters["dead_letters"] += 1
    headers = [("reason", reason.encode()), ("source_topic", message.topic.encode()),
               ("partition", str(message.partition).encode()), ("offset", str(message.offset).encode())]
    await send(dead_letter_topic, message.key, message.value, headers)


@app.agent(click_sources)
async def predict_next_intent(stream: Any) -> None:
    """Predict the next intent after every click, one predictor call per micro-batch."""
    global stream_time_ms
    loop = asyncio.get_running_loop()
    predictor = await loop.run_in_executor(inference_pool, load_predictor)
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        started = time.monotonic()
        now_ms = int(time.time() * 1000)
        counters["clicks"] += len(events)
        clicks, received, last_event = [], [], {}
        for event in events:
            message = event.message
            click, reason = check_click(message.value, click_codec, now_ms)
            if click is None:
                await send_dead_letter(message, reason or "invalid")
                continue
            key = click["user_id"].encode()
            if message.key != key:
                # a click without its user id as key lives on the wrong partition for its user's window:
                # send it round again, keyed, through the rekeyed topic (co-partitioned with clicks)
                counters["rekeyed"] += 1
                await send(rekeyed_clicks_topic, key, message.value)
                continue
            clicks.append(click)
            received.append(message.time_in or started)
            last_event[key] = event
        if not clicks:
            continue
        snapshots, windows = update_windows(clicks, user_to_window.get, settings.window_length)
        for key, window in windows.items():
            # Faust's RocksDB store files a key under the partition of the *current* event, which a batch
            # does not have: make it the user's own click (same partition as the user's changelog record).
            set_current_event(last_event[key])
            user_to_window[key] = window.pack()
        set_current_event(None)
        stream_time_ms = max(stream_time_ms, max(w.newest_ms for w in windows.values()))
        windows_done = time.monotonic()
        batch = await loop.run_in_executor(inference_pool, predictor.predict, snapshots)
        inferred = time.monotonic()
        timing = [{"batch_size": len(clicks), "batch_wait_ms": (started - r) * 1000,
                   "window_ms": (windows_done - started) * 1000, "inference_ms": (inferred - windows_done) * 1000}
                  for r in received]
        records = prediction_records(clicks, batch, predictor.version, int(time.time() * 1000), timing)
        for click, record in zip(clicks, records):
            await send(predictions_topic, click["user_id"].encode(), prediction_codec.encode(record))
        counters["predictions"] += len(records)
        counters["batches"] += 1


@app.timer(interval=60.0)
async def expire_idle_windows() -> None:
    """Delete the windows of users idle longer than the TTL (in event time, so backfills expire too)."""
    if not stream_time_ms:
        return
    stale = stale_keys(user_to_window.items(), stream_time_ms, settings.window_ttl_s * 1000)
    for key in stale:
        del user_to_window[key]
    counters["expired"] += len(stale)


@app.timer(interval=10.0)
async def log_counters() -> None:
    log.info("clicks %(clicks)d, predictions %(predictions)d in %(batches)d batches, dead letters "
             "%(dead_letters)d, rekeyed %(rekeyed)d, expired windows %(expired)d", counters)
