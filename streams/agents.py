"""The agent ``predict_next_intent``: glue between Faust and :class:`streams.batch.BatchProcessor`.

Per micro-batch: hand the messages to the processor, store the changed windows, send dead letters, rekeyed
clicks and predictions through the app's producer. With ``CLICKSTREAM_INFERENCE_PROCESS`` (the default) the
processor and the predictor live in a child process (streams/inference.py) and one batch is in flight there
while the agent reads the next. Nothing is acknowledged unless the whole batch was handled
(:func:`streams.faust_glue.hold`); a failure that no message can be blamed for stops the worker process, so
that a restart reads the batch again (at least once, never silently lost).
"""
from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import sys
import time
from typing import Any

from faust.types import TP

from core.records import Click, Prediction
from schemas.codec import RecordCodec
from streams import metrics
from streams.app import app, settings
from streams.batch import BatchProcessor, BatchResult, Counters, Message, stale_keys
from streams.derived import COUNTERS_INTERVAL_S, derived
from streams.faust_glue import TableWrite, committed_offsets, hold, release, scan_table, send_in_batches, write_table
from streams.holes import LogReader, with_filled
from streams.inference import ChildConfig, InferenceProcess
from streams.runtime import Runtime
from streams.topics import click_sources, dead_letter_topic, predictions_topic, rekeyed_clicks_topic, user_to_window
from streams.watchdog import ProgressWatch

log = logging.getLogger(__name__)

EXIT_UNHANDLED_BATCH = 70  # EX_SOFTWARE
EXIT_STALLED = 75  # EX_TEMPFAIL: a restart is expected to carry on
WATCH_INTERVAL_S = 5.0
# windows read after each batch while a pass runs (~10 ms here): a million users take ~250 batches, not one
# stall of seconds
EXPIRY_SLICE = 4096
runtime = Runtime()  # this worker's predictor and batch processor, shared with the web views (streams/web.py)
progress = ProgressWatch(settings.stall_timeout_s)
log_reader = LogReader(settings.aiokafka_config())  # reads the offsets a batch skips (streams/holes.py)


def load_predictor(first: bool = True) -> Any:
    # TensorFlow loads here, when the agent starts, not when the app module is imported
    from model.explain import DRIVERS_PER_PREDICTION
    from model.predictor import Predictor

    # at start (predictor_warm "first") the worker serves once one shape is traced (~1.5 s; batches pad to it until
    # the compiled shapes, queued between them by compile_in_turn, are ready); a model rolled out later is loaded
    # beside the serving one and compiled whole
    predictor = Predictor(settings.model_dir, top_k=settings.top_k,
                          threads=settings.inference_threads if first else None,  # fixed once per process
                          batch_sizes=settings.predictor_batch_sizes, lengths=settings.predictor_lengths,
                          drivers=DRIVERS_PER_PREDICTION if settings.explain_predictions else 0,
                          warm="first" if first and settings.predictor_warm == "first" else True)
    log.info("model %s loaded from %s; serving after %.1fs of warm-up, %d of %d shapes warmed (compiled)",
             predictor.version, settings.model_dir, predictor.warm_s, predictor.shapes_warm, predictor.shapes_total)
    return predictor


async def compile_in_turn(predictor: Any) -> None:
    """Compile the serving model's other shapes on the inference thread, one at a time, letting the batches that
    queued behind each one run before the next: TensorFlow never compiles and predicts at once, and a batch
    waits behind at most one shape (~4 s here)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(1.0)  # the first batches first
    for shape in predictor.shapes_to_compile():
        await loop.run_in_executor(runtime.inference, compile_one, predictor, shape)
        await asyncio.sleep(0.2)
    log.info("model %s: every shape compiled (%d of %d)", predictor.version, predictor.shapes_warm,
             predictor.shapes_total)
    freeze_heap()


def freeze_heap(collect: bool = False) -> None:
    """Move every object alive now (TensorFlow, the model, Faust: ~400k) out of the garbage collector's sight.

    A full collection walks them all, ~0.4 s here, and Python runs one whenever enough new long-lived objects
    pile up: a stall of the event loop that every click in flight waits out. Freezing is instant; what is alive
    once the model is loaded lives as long as the process. After a rollout (``collect``) the frozen objects are
    collected once first, so that the replaced model's cycles are freed: one such stall per rollout.
    """
    started = time.monotonic()
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    log.info("garbage collector: %d objects frozen in %.2fs", gc.get_freeze_count(), time.monotonic() - started)


def compile_one(predictor: Any, shape: tuple[int, int]) -> None:
    try:
        predictor.warm([shape])
    except Exception as exc:  # the shape stays unused: batches keep running on the shapes that are ready
        log.error("model %s: compiling shape %s failed: %s: %s", predictor.version, shape, type(exc).__name__, exc)


def stop_unacknowledged(exc: BaseException) -> None:
    """End the process at once: the batch in hand stays unacknowledged and is read again after a restart."""
    log.critical("stopping the worker without acknowledging the batch in hand: %s: %s", type(exc).__name__, exc,
                 exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_UNHANDLED_BATCH)


@app.agent(click_sources)
async def predict_next_intent(stream: Any) -> None:
    """Predict the next intent after every click, one predictor call per micro-batch."""
    try:
        if settings.inference_process:
            await predict_in_child(stream)
        else:
            await predict_in_process(stream)
    finally:
        await log_reader.close()


async def predict_in_process(stream: Any) -> None:
    loop = asyncio.get_running_loop()
    try:
        predictor = await loop.run_in_executor(runtime.inference, load_predictor)
    except Exception as exc:
        stop_unacknowledged(exc)
    processor = BatchProcessor(click_codec=RecordCodec(Click, settings.schema_id_click, **settings.codec_options()),
                               prediction_codec=RecordCodec(Prediction, settings.schema_id_prediction,
                                                            **settings.codec_options()),
                               window_length=predictor.window_length, model_version=predictor.version)
    runtime.predictor, runtime.processor = predictor, processor
    chores = serving(predictor.version)
    runtime.compiling = asyncio.ensure_future(compile_in_turn(predictor))
    async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
        await handle(events, processor)
        await chores.after_batch(processor.stream_time_ms, processor.counters)


def serving(version: str) -> Chores:
    """What starts with the first batch, in either mode: the event loop's watch, the heap frozen, the model's
    metric; and the chores between batches."""
    arm_loop_watch()  # from the first batch on, before the progress timer's first turn
    freeze_heap()
    metrics.model_info.labels(version).set(1)
    return Chores()


class Chores:
    """Between batches: idle windows expired, a pass starting ``settings.expiry_interval_s`` after the last
    one ended (the first that long after start) and reading ``EXPIRY_SLICE`` windows after each batch until it
    is done; the counters logged every ``COUNTERS_INTERVAL_S``."""

    def __init__(self) -> None:
        self.next_report = time.monotonic()
        self.next_expiry = self.next_report + settings.expiry_interval_s
        self.expiry: Expiry | None = None  # the pass under way

    async def after_batch(self, stream_time_ms: int, counters: Counters) -> None:
        now = time.monotonic()
        if self.expiry is None and now >= self.next_expiry and stream_time_ms:
            self.expiry = Expiry()
        if self.expiry is not None and await self.expiry.step(stream_time_ms, counters):
            self.expiry, self.next_expiry = None, now + settings.expiry_interval_s
        if now >= self.next_report:
            self.next_report = now + COUNTERS_INTERVAL_S
            log.info("%s", counters)


async def handle(events: list[Any], processor: BatchProcessor) -> None:
    """One micro-batch: the offsets it skips read from the log first, then everything handed to the producer
    before the batch is acknowledged; any failure stops the worker with the batch unacknowledged."""
    switched_from = runtime.switch_to_pending()
    if switched_from is not None:
        switched(switched_from)
    hold(events)
    try:
        started = time.monotonic()
        messages, sources = await batch_messages(events)
        result = await processor.process(messages, user_to_window.get, runtime.infer)
        await deliver(messages, sources, result, processor.window_length, started)
    except asyncio.CancelledError:
        raise  # the worker is stopping: the batch stays unacknowledged and is read again
    except Exception as exc:
        stop_unacknowledged(exc)
    release(events)


def switched(switched_from: str) -> None:
    log.info("switched from model %s to %s", switched_from, runtime.predictor.version)
    freeze_heap(collect=True)
    metrics.model_info.labels(switched_from).set(0)
    metrics.model_info.labels(runtime.predictor.version).set(1)


async def batch_messages(events: list[Any]) -> tuple[list[Message], list[Any]]:
    """A batch's messages with the records of the offsets it skips, and the Faust event each one stands for
    (its table writes and derived records are filed by that event's partition)."""
    messages = [Message(e.message.key, e.message.value, e.message.topic, e.message.partition,
                        e.message.offset, e.message.time_in or time.monotonic()) for e in events]
    messages, origin = await fill_holes(messages)
    return messages, [events[i] for i in origin]


async def deliver(messages: list[Message], sources: list[Any], result: BatchResult, window_length: int,
                  started: float) -> None:
    """Store a handled batch's windows and hand everything it made to the producer."""
    sending = time.monotonic()
    await write_table(user_to_window, app.producer,
                      [TableWrite(key, packed, sources[index])
                       for key, (packed, index) in result.window_writes.items()], stop_unacknowledged)
    derivation = result.derived if result.derived is not None else derived.derive_here(messages, result, window_length)
    derived_outgoing = await derived.publish(sources, derivation, stop_unacknowledged)  # demand, audiences
    for topic, outgoing in ((dead_letter_topic, result.dead_letters),
                            (rekeyed_clicks_topic, result.rekeyed), (predictions_topic, result.predictions),
                            *derived_outgoing):
        if outgoing:
            await send_in_batches(app.producer, topic.get_topic_name(), outgoing, stop_unacknowledged)
    observe(messages, result, started, sending, time.monotonic())


async def start_child(first: bool = True) -> InferenceProcess:
    """The inference process of the model at the model folder, loaded and warm (at start as
    ``CLICKSTREAM_PREDICTOR_WARM`` says; a model rolled out later is compiled whole before it serves)."""
    from model.explain import DRIVERS_PER_PREDICTION

    config = ChildConfig(settings.model_dir, settings.top_k, settings.inference_threads, settings.predictor_batch_sizes,
                         settings.predictor_lengths, DRIVERS_PER_PREDICTION if settings.explain_predictions else 0,
                         settings.schema_id_click, settings.schema_id_prediction, settings.codec_options(),
                         derived.config,
                         warm=settings.predictor_warm if first else "all")
    child = await InferenceProcess(config).ready()
    log.info("model %s loaded from %s in the inference process; serving after %.1fs of warm-up, %d of %d shapes "
             "warmed (compiled)", child.version, settings.model_dir, child.warm_s, child.shapes_warm,
             child.shapes_total)
    return child


async def predict_in_child(stream: Any) -> None:
    """The agent with the per-click work in a child process (streams/inference.py): while the child handles a
    batch, the next one is read and handed over; batches are delivered and acknowledged in order."""
    try:
        runtime.predictor = await start_child()
    except Exception as exc:
        stop_unacknowledged(exc)
    window_length = runtime.predictor.window_length
    counters = Counters()  # of the batches delivered
    stream_time_ms = 0  # the newest event time delivered (idle windows expire against it)
    chores = serving(runtime.predictor.version)
    in_flight: asyncio.Future[BatchResult] | None = None  # the batch before, in the child or being delivered

    async def finish(events: list[Any], messages: list[Message], sources: list[Any], reply: Any, started: float,
                     window_length: int) -> BatchResult:
        try:
            result = await reply
            await deliver(messages, sources, result, window_length, started)
        except asyncio.CancelledError:
            raise  # the worker is stopping: the batch stays unacknowledged and is read again
        except Exception as exc:  # the child died (EOFError) or a send failed
            stop_unacknowledged(exc)
        release(events)
        counters.clicks += len(messages)
        counters.predictions += len(result.predictions)
        counters.dead_letters += len(result.dead_letters)
        counters.rekeyed += len(result.rekeyed)
        counters.batches += 1
        return result

    try:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            if runtime.pending is not None:  # a new model's child is warm: it takes over between two batches
                if in_flight is not None:
                    stream_time_ms = max(stream_time_ms, (await in_flight).newest_event_ms)
                    in_flight = None
                old, runtime.predictor, runtime.pending = runtime.predictor, runtime.pending, None
                try:
                    await runtime.predictor.take_over_from(old)
                except Exception as exc:
                    stop_unacknowledged(exc)
                old.close()
                window_length = runtime.predictor.window_length
                switched(old.version)
            hold(events)
            try:
                started = time.monotonic()
                messages, sources = await batch_messages(events)
                if derived.assigned is not None and in_flight is not None:
                    # a new assignment: its windows and audience states are read from the tables once the batch
                    # in flight has written its own (the child forgets what it wrote when the generation changes)
                    stream_time_ms = max(stream_time_ms, (await in_flight).newest_event_ms)
                    in_flight = None
                get = user_to_window.get  # each user's stored window read once, as update_windows does
                stored = {key: get(key) for key in {m.key for m in messages} if key is not None}
                reply = runtime.predictor.batch(messages, stored, app.consumer_generation_id,
                                                derived.take_reassignment())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stop_unacknowledged(exc)
            if in_flight is not None:
                stream_time_ms = max(stream_time_ms, (await in_flight).newest_event_ms)  # its output goes first
            in_flight = asyncio.ensure_future(finish(events, messages, sources, reply, started, window_length))
            await chores.after_batch(stream_time_ms, counters)
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()  # that batch stays unacknowledged and is read again
        runtime.predictor.close()


async def fill_holes(messages: list[Message]) -> tuple[list[Message], list[int]]:
    """The batch with the records of the offsets it skips (streams/holes.py), and what each message stands for."""
    holes = progress.arrived([(m.topic, m.partition, m.offset) for m in messages],
                             committed_offsets(app.consumer, {TP(m.topic, m.partition) for m in messages}),
                             app.consumer_generation_id)
    filled = []
    for (topic, partition), first, seen in holes:
        records = await log_reader.read(topic, partition, first, seen)
        filled.append(((topic, partition), seen, records))
        if records:
            log.warning("%s[%d]: offsets %d to %d never reached the agent (the next one did); %d records read "
                        "from the log for them and handled in this batch", topic, partition, first, seen - 1,
                        len(records))
            metrics.skipped_offsets.inc(len(records))
        else:
            log.debug("%s[%d]: offsets %d to %d hold no records (transaction markers)", topic, partition, first,
                      seen - 1)
    return with_filled(messages, filled)


@app.timer(interval=WATCH_INTERVAL_S)
async def watch_progress() -> None:
    """End a worker whose committed offsets stay behind, unmoved, for ``stall_timeout_s`` (streams/watchdog.py),
    or whose event loop stops. Until the model is warm and while tables recover, the first clock does not run."""
    if not settings.stall_timeout_s:
        return
    arm_loop_watch()
    if runtime.predictor is None or not app.tables.recovery.completed.is_set():
        progress.not_watching()
        return
    try:
        sources = set(click_sources.topics)
        tps = sorted(tp for tp in app.consumer.assignment() if tp.topic in sources)
        if not tps:
            progress.not_watching()
            return
        ends = await asyncio.wait_for(app.consumer.highwaters(*tps), timeout=WATCH_INTERVAL_S)
        late = progress.stalled({(tp.topic, tp.partition): end for tp, end in ends.items()},
                                committed_offsets(app.consumer, tps))
    except Exception as exc:  # the broker is away (Faust and the client log that): not this worker's stall
        log.debug("progress watch: end offsets not read: %r", exc)
        progress.not_watching()
        return
    if late:
        behind = ", ".join(f"{topic}[{partition}] {done}/{end}" for (topic, partition), (done, end) in sorted(late.items()))
        log.critical("stalled: the committed offset has not moved for %ds while clicks wait (committed / end "
                     "offset: %s); stopping so that a restart reads them again. What every task was doing:",
                     settings.stall_timeout_s, behind)
        dump_tasks()
        logging.shutdown()
        os._exit(EXIT_STALLED)


def arm_loop_watch() -> None:
    """The event loop itself: if it stops turning (the progress timer does not come back to re-arm this), a C
    thread of Python's faulthandler dumps every thread's stack and ends the process (exit code 1)."""
    if settings.stall_timeout_s:
        faulthandler.dump_traceback_later(settings.stall_timeout_s + WATCH_INTERVAL_S, exit=True, file=sys.__stderr__)


def dump_tasks() -> None:
    """Every thread's stack and every asyncio task's, to the log (what Faust's worker prints on SIGUSR1)."""
    from mode.utils.logging import cry

    try:  # the process's own stderr, as SIGUSR1 does: Faust's redirected sys.stderr would log each line apart
        cry(file=sys.__stderr__)
        sys.__stderr__.flush()
    except Exception as exc:  # the exit must not depend on the dump
        log.error("task dump failed: %r", exc)


@app.timer(interval=max(1, settings.model_poll_s))
async def watch_model() -> None:
    """Look for a new model version at the model folder (or behind its symlink) and load it beside the one
    serving; the agent switches between batches. A broken artifact is refused and the serving model kept."""
    if settings.model_poll_s and runtime.predictor is not None and runtime.pending is None and (
            runtime.loading is None or runtime.loading.done()):
        runtime.loading = asyncio.ensure_future(load_new_model())


async def load_new_model() -> None:
    from core.errors import ModelError
    from model.artifact import read_manifest

    loop = asyncio.get_running_loop()
    try:
        version = (await loop.run_in_executor(None, read_manifest, settings.model_dir))["version"]
        if version == runtime.predictor.version:
            runtime.refused = None
            return
        log.info("model %s found at %s: loading it beside %s", version, settings.model_dir, runtime.predictor.version)
        runtime.pending = (await start_child(first=False) if settings.inference_process
                           else await loop.run_in_executor(None, load_predictor, False))
        runtime.refused = None
        log.info("model %s is warm: switching to it at the next batch", runtime.pending.version)
    except ModelError as exc:
        if str(exc) != runtime.refused:
            log.error("refused the model at %s, still serving %s: %s", settings.model_dir,
                      runtime.predictor.version, exc)
            runtime.refused = str(exc)


def observe(messages: list[Message], result: BatchResult, started: float, sending: float, sent: float) -> None:
    """Prometheus metrics of one handled batch."""
    metrics.clicks.inc(len(messages))
    metrics.predictions.inc(len(result.predictions))
    metrics.rekeyed.inc(len(result.rekeyed))
    for out in result.dead_letters:
        metrics.dead_letters.labels(metrics.reason_label(dict(out.headers)["reason"].decode())).inc()
    metrics.batch_size.observe(len(messages))
    stage = metrics.stage_seconds
    stage.labels("wait").observe(max(0.0, started - min(m.received_s for m in messages)))
    stage.labels("window").observe(result.window_s)
    stage.labels("inference").observe(result.inference_s)
    stage.labels("send").observe(sent - sending)
    for m in messages:
        metrics.click_to_prediction.observe(sent - m.received_s)


class Expiry:
    """One pass over the stored windows, deleting those of users idle longer than the TTL (in event time, so
    backfills expire too), ``EXPIRY_SLICE`` windows at a time."""

    def __init__(self) -> None:
        self.after: tuple[int, bytes] | None = None
        self.scanned = self.expired = self.slices = 0
        self.seconds = self.longest_s = 0.0

    async def step(self, stream_time_ms: int, counters: Counters) -> bool:
        """Read the next slice and delete its stale windows; True once the pass is done. The reads and the
        deletes from the store happen with no await between them: no batch writes a window in between."""
        started = time.monotonic()
        items, self.after = scan_table(user_to_window, self.after, EXPIRY_SLICE)
        stale = stale_keys(items, stream_time_ms, settings.window_ttl_s * 1000)
        await write_table(user_to_window, app.producer, [TableWrite(key, None, None) for key in stale],
                          stop_unacknowledged)
        took = time.monotonic() - started
        self.scanned, self.expired, self.slices = self.scanned + len(items), self.expired + len(stale), self.slices + 1
        self.seconds, self.longest_s = self.seconds + took, max(self.longest_s, took)
        counters.expired += len(stale)
        metrics.expired_windows.inc(len(stale))
        if self.after is None:
            log.info("idle windows: %d of %d expired in %d slices of %d (%.0f ms in all, the longest %.1f ms)",
                     self.expired, self.scanned, self.slices, EXPIRY_SLICE, self.seconds * 1000, self.longest_s * 1000)
        return self.after is None
