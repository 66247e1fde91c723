"""The agent ``predict_next_intent``: glue between Faust and the inference engine (streams/inference.py).

Per micro-batch: sort the messages on arrival (streams/ledger.py: holes read from the log, offsets handled already
dropped), hand them to the engine with their users' stored windows, then store the forgotten-users records and the
changed (or deleted) windows and send dead letters, rekeyed clicks, predictions, demand and audiences through the
app's producer. One batch is in the engine while the agent reads the next; batches are delivered in order. The
worker commits what it delivered itself, once the producer has flushed it, every second and before its partitions
are revoked. A failure that no message can be blamed for stops the worker process uncommitted, so that a restart
reads the batch again (at least once, never silently lost).
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

from streams import metrics
from streams.app import app, settings
from streams.batch import BatchResult, Counters, Message, stale_keys
from streams.derived import COUNTERS_INTERVAL_S, derived
from streams.faust_glue import TableWrite, commit, hold_stream_queues, scan_table, send_in_batches, write_table
from streams.holes import LogReader, with_filled
from streams.inference import ChildConfig, Inference
from streams.ledger import Ledger
from streams.runtime import Runtime
from streams.state import record_owner
from streams.topics import (
    click_sources,
    dead_letter_topic,
    forget_topic,
    predictions_topic,
    rekeyed_clicks_topic,
    user_forgotten,
    user_to_window,
)
from streams.watchdog import ProgressWatch

log = logging.getLogger(__name__)

EXIT_UNHANDLED_BATCH = 70  # EX_SOFTWARE
EXIT_STALLED = 75  # EX_TEMPFAIL: a restart is expected to carry on
WATCH_INTERVAL_S = 5.0
COMMIT_INTERVAL_S = 1.0
STOP_WAIT_S = 5.0
RESEEK_AFTER_S = 10.0
# windows read after each batch while a pass runs (~10 ms here): a million users take ~250 batches, not one
# stall of seconds
EXPIRY_SLICE = 4096
runtime = Runtime()  # this worker's inference engine, shared with the web views (streams/web.py)
progress = ProgressWatch(settings.stall_timeout_s)
# a partition whose next expected offset stands still below its end this long, with no batch in flight, is
# sought back to it: Faust's fetch loop can be left ahead of it after a rebalance and drop what it fetches again
arrivals = ProgressWatch(RESEEK_AFTER_S)
ledger = Ledger()  # what the agent handled, and what the worker commits (streams/ledger.py)
log_reader = LogReader(settings.aiokafka_config())  # reads the offsets a batch skips (streams/holes.py)
in_flight: set[asyncio.Future[Any]] = set()  # batches handed to the engine and not yet delivered
_commit_lock = asyncio.Lock()


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


def stop_uncommitted(exc: BaseException) -> None:
    """End the process at once: the batch in hand stays uncommitted and is read again after a restart."""
    log.critical("stopping the worker without committing the batch in hand: %s: %s", type(exc).__name__, exc,
                 exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_UNHANDLED_BATCH)


@app.agent(click_sources)
async def predict_next_intent(stream: Any) -> None:
    """Predict the next intent after every click, one predictor call per micro-batch."""
    try:
        await predict(stream)
    finally:
        await log_reader.close()


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
            log.info("%s; offsets: %s", counters, ledger.describe())


def switched(switched_from: str) -> None:
    log.info("switched from model %s to %s", switched_from, runtime.predictor.version)
    freeze_heap(collect=True)
    metrics.model_info.labels(switched_from).set(0)
    metrics.model_info.labels(runtime.predictor.version).set(1)


async def batch_messages(events: list[Any], generation: int | None) -> tuple[list[Message], list[Any]]:
    """A batch's messages to handle, sorted on arrival (streams/ledger.py), with the records of the offsets it
    skips read from the log, and the Faust event each one stands for (its table writes and derived records are
    filed by that event's partition)."""
    offsets = [(e.message.topic, e.message.partition, e.message.offset) for e in events]
    arrival = ledger.sort(offsets, generation if app.consumer.flow_active else None)
    if arrival.again or arrival.foreign:
        log.info("dropped on arrival: %d offsets handled already, %d of partitions not assigned (generation %s, "
                 "flow %s)", arrival.again, arrival.foreign, generation,
                 "on" if app.consumer.flow_active else "stopped")
        metrics.dropped_offsets.labels("handled").inc(arrival.again)
        metrics.dropped_offsets.labels("revoked").inc(arrival.foreign)
    kept = [events[i] for i in arrival.keep]
    messages = [Message(e.message.key, e.message.value, e.message.topic, e.message.partition,
                        e.message.offset, e.message.time_in or time.monotonic()) for e in kept]
    messages, origin = await fill_holes(messages, arrival.holes)
    return messages, [kept[i] for i in origin]


@app.on_rebalance_complete.connect
async def hold_streams_until_flow_resumes(sender: Any, **kwargs: Any) -> None:
    """No click enters the agent's queue between Faust resuming the stream partitions and its flow-control
    resume, which clears that queue (streams/faust_glue.py, 7.)."""
    hold_stream_queues(app)


@app.on_partitions_assigned.connect
async def start_where_committed(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
    """Each assigned clicks partition starts at the group's committed offset; one without a committed offset (or
    at 0) at the first offset of its log, where the worker seeks it: aiokafka's seek to the committed offsets
    leaves those where the consumer had fetched them to before the rebalance, so that records fetched then and
    dropped with Faust's queues would never be read again. The ledger learns where each partition starts."""
    generation = app.consumer_generation_id
    sources = set(click_sources.topics)
    tps = sorted(tp for tp in assigned if tp.topic in sources)
    if not tps:
        ledger.assign(generation, {}, {})
        return
    committed = {TP(tp.topic, tp.partition): offset for tp, offset in (await app.consumer.seek_to_committed()).items()}
    fresh = [tp for tp in tps if not committed.get(tp)]
    earliest = await app.consumer.earliest_offsets(*fresh) if fresh else {}
    for tp in fresh:
        await app.consumer.seek(tp, earliest[tp])
    if generation != app.consumer_generation_id:
        return  # rebalanced again meanwhile: the next assignment starts afresh
    ledger.assign(generation, {(tp.topic, tp.partition): committed.get(tp) or earliest[tp] for tp in tps},
                  {(tp.topic, tp.partition): committed.get(tp) for tp in tps})
    log.info("offsets at assignment: %s", ledger.describe())


async def deliver(messages: list[Message], sources: list[Any], result: BatchResult, started: float) -> None:
    """Store a handled batch's windows and hand everything it made to the producer."""
    sending = time.monotonic()
    await write_table(user_forgotten, app.producer,
                      [TableWrite(key, record, sources[index])
                       for key, (record, index) in result.forgotten_writes.items()], stop_uncommitted)
    await write_table(user_to_window, app.producer,
                      [TableWrite(key, packed, sources[index])
                       for key, (packed, index) in result.window_writes.items()], stop_uncommitted)
    derived_outgoing = await derived.publish(sources, result.derived, stop_uncommitted)  # demand, audiences
    for topic, outgoing in ((dead_letter_topic, result.dead_letters),
                            (rekeyed_clicks_topic, result.rekeyed), (forget_topic, result.forget_rekeyed),
                            (predictions_topic, result.predictions),
                            *derived_outgoing):
        if outgoing:
            await send_in_batches(app.producer, topic.get_topic_name(), outgoing, stop_uncommitted)
    observe(messages, result, started, sending, time.monotonic())


async def start_engine(first: bool = True) -> Inference:
    """The inference engine of the model at the model folder, loaded and warm (at start as
    ``CLICKSTREAM_PREDICTOR_WARM`` says; a model rolled out later is compiled whole before it serves): in a child
    process, or in a thread of this one (``CLICKSTREAM_INFERENCE_PROCESS=false``)."""
    from model.explain import DRIVERS_PER_PREDICTION

    in_process = not settings.inference_process
    config = ChildConfig(settings.model_dir, settings.top_k,
                         0 if in_process and not first else settings.inference_threads,  # once per process
                         settings.predictor_batch_sizes, settings.predictor_lengths,
                         DRIVERS_PER_PREDICTION if settings.explain_predictions else 0,
                         settings.schema_id_click, settings.schema_id_prediction, settings.codec_options(),
                         derived.config, settings.predictor_factory, settings.runtime,
                         warm=settings.predictor_warm if first else "all", forget_topic=settings.forget_topic,
                         rekeyed_topic=settings.rekeyed_topic, user_ids=settings.user_ids())
    engine = await Inference(config, in_process=in_process).ready()
    log.info("model %s loaded from %s in the inference %s (%s runtime); serving after %.1fs of warm-up, %d of %d "
             "shapes warmed (compiled)", engine.version, settings.model_dir, "thread" if in_process else "process",
             settings.runtime, engine.warm_s, engine.shapes_warm, engine.shapes_total)
    return engine


_background: set[asyncio.Future[None]] = set()


async def record_owner_once_recovered() -> None:
    """The changelogs' ids in the state folder's owner.json (streams/state.py), once the tables' first recovery
    is over: Faust has created the changelogs by then."""
    await app.tables.recovery.completed.wait()
    try:
        await asyncio.get_running_loop().run_in_executor(None, record_owner, settings)
    except Exception as exc:  # checked again at the next start
        log.warning("the state folder's owner.json was not updated: %r", exc)


async def predict(stream: Any) -> None:
    """The agent's loop: while the engine handles a batch, the next one is read and handed over; batches are
    delivered in order, and what each delivered is noted for the next commit."""
    try:
        runtime.predictor = await start_engine()
    except Exception as exc:
        stop_uncommitted(exc)
    owner = asyncio.ensure_future(record_owner_once_recovered())
    _background.add(owner)  # a reference until it is done (the loop keeps only weak ones)
    owner.add_done_callback(_background.discard)
    counters = Counters()  # of the batches delivered
    stream_time_ms = 0  # the newest event time delivered (idle windows expire against it)
    chores = serving(runtime.predictor.version)
    last: asyncio.Future[BatchResult] | None = None  # the batch before, in the engine or being delivered

    async def finish(generation: int | None, messages: list[Message], sources: list[Any], reply: Any,
                     started: float) -> BatchResult:
        try:
            result = await reply
            await deliver(messages, sources, result, started)
        except asyncio.CancelledError:
            raise  # the worker is stopping: the batch stays uncommitted and is read again
        except Exception as exc:  # the engine failed or died (EOFError), or a send failed
            stop_uncommitted(exc)
        ledger.delivered(generation, ((m.topic, m.partition, m.offset) for m in messages))
        counters.clicks += len(messages)
        counters.predictions += len(result.predictions)
        counters.dead_letters += len(result.dead_letters)
        counters.rekeyed += len(result.rekeyed)
        counters.forget_requests += len(result.forgotten_writes)
        counters.dropped_forgotten += result.dropped_forgotten
        counters.batches += 1
        return result

    try:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_ms / 1000):
            if runtime.pending is not None:  # a new model's engine is warm: it takes over between two batches
                if last is not None:
                    stream_time_ms = max(stream_time_ms, (await last).newest_event_ms)
                    last = None
                old, runtime.predictor, runtime.pending = runtime.predictor, runtime.pending, None
                try:
                    await runtime.predictor.take_over_from(old)
                except Exception as exc:
                    stop_uncommitted(exc)
                old.close()
                switched(old.version)
            try:
                started = time.monotonic()
                generation = app.consumer_generation_id
                messages, sources = await batch_messages(events, generation)
                if not messages:
                    await chores.after_batch(stream_time_ms, counters)
                    continue
                if derived.assigned is not None and last is not None:
                    # a new assignment: its windows, audience states and forgotten users are read from the tables
                    # once the batch in flight has written its own (the engine forgets what it wrote when the
                    # generation changes)
                    stream_time_ms = max(stream_time_ms, (await last).newest_event_ms)
                    last = None
                get = user_to_window.get  # each user's stored window read once, as update_windows does
                stored = {key: get(key) for key in {m.key for m in messages} if key is not None}
                reply = runtime.predictor.batch(messages, stored, generation, derived.take_reassignment())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                stop_uncommitted(exc)
            if last is not None:
                stream_time_ms = max(stream_time_ms, (await last).newest_event_ms)  # its output goes first
            last = asyncio.ensure_future(finish(generation, messages, sources, reply, started))
            in_flight.add(last)
            last.add_done_callback(in_flight.discard)
            await chores.after_batch(stream_time_ms, counters)
    finally:
        await stopping(last)
        runtime.predictor.close()


async def stopping(last: asyncio.Future[Any] | None) -> None:
    """The worker stops (SIGTERM): the batch in flight is delivered and what was delivered committed, each
    within a few seconds (else it stays uncommitted, and whoever gets the partition reads it again)."""
    try:
        if last is not None and not last.done():
            await asyncio.wait([last], timeout=STOP_WAIT_S)
            if not last.done():
                last.cancel()
        await asyncio.wait_for(commit_delivered(), STOP_WAIT_S)
    except (asyncio.CancelledError, asyncio.TimeoutError, Exception) as exc:  # stopping anyway
        log.info("stopping: what the last batches handled was not committed (%r): it is read again", exc)


async def fill_holes(messages: list[Message], holes: list[tuple[tuple[str, int], int, int]]
                     ) -> tuple[list[Message], list[int]]:
    """The batch with the records of the offsets it skips (streams/holes.py), and what each message stands for."""
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


async def commit_delivered(rebalancing: bool = False) -> None:
    """Commit, per partition, the offset after the last delivered one (streams/ledger.py), once the producer has
    flushed everything those batches sent. Outside a rebalance only (the revocation commits for itself)."""
    async with _commit_lock:
        generation = ledger.generation
        offsets = ledger.to_commit()
        if not offsets or (app.rebalancing and not rebalancing):
            return
        await app.producer.flush()
        if generation != ledger.generation:
            return
        if await commit(app.consumer, {TP(topic, partition): offset for (topic, partition), offset in offsets.items()}):
            ledger.did_commit(generation, offsets)
            metrics.commits.inc()


@app.timer(interval=COMMIT_INTERVAL_S)
async def commit_periodically() -> None:
    await commit_delivered()


async def before_revoke() -> None:
    """The group rebalances (called by streams.app.IntentApp before Faust revokes anything): let the batches in
    flight be delivered, commit what was handled, and start afresh with the next assignment. A batch that is
    not delivered in time stays uncommitted: its clicks are read again by whoever gets the partition."""
    ledger.stop_accepting()  # a batch taken from now on is dropped: it would be handled and never committed
    pending = [f for f in in_flight if not f.done()]
    if pending:
        await asyncio.wait(pending, timeout=max(1.0, settings.session_timeout_s / 2))
    try:
        await commit_delivered(rebalancing=True)
    finally:
        ledger.revoke()


app.before_revoke.append(before_revoke)


@app.timer(interval=WATCH_INTERVAL_S)
async def watch_progress() -> None:
    """End a worker whose committed offsets stay behind, unmoved, for ``stall_timeout_s`` (streams/watchdog.py),
    or whose event loop stops. Until the model is warm and while tables recover, the first clock does not run.
    Each partition's wait is exported as a metric (``clickstream_commit_waiting_seconds``) for alerts."""
    arm_loop_watch()
    if runtime.predictor is None or not app.tables.recovery.completed.is_set():
        progress.not_watching()
        metrics.commit_waiting.clear()
        return
    try:
        sources = set(click_sources.topics)
        tps = sorted(tp for tp in app.consumer.assignment() if tp.topic in sources)
        if not tps:
            progress.not_watching()
            return
        ends = await asyncio.wait_for(app.consumer.highwaters(*tps), timeout=WATCH_INTERVAL_S)
        late = progress.stalled({(tp.topic, tp.partition): end for tp, end in ends.items()}, ledger.progress())
    except Exception as exc:  # the broker is away (Faust and the client log that): not this worker's stall
        log.debug("progress watch: end offsets not read: %r", exc)
        progress.not_watching()
        return
    await reseek_quiet_partitions(ends)
    metrics.commit_waiting.clear()
    for (topic, partition), waiting in progress.waiting_s.items():
        metrics.commit_waiting.labels(topic, str(partition)).set(waiting)
    if late:
        behind = ", ".join(f"{topic}[{partition}] {done}/{end}" for (topic, partition), (done, end) in sorted(late.items()))
        log.critical("stalled: the committed offset has not moved for %ds while clicks wait (committed / end "
                     "offset: %s; %s; Faust's read offsets %s); stopping so that a restart reads them again. What "
                     "every task was doing:", settings.stall_timeout_s, behind, ledger.describe(),
                     {f"{tp.topic}[{tp.partition}]": app.consumer._read_offset.get(tp) for tp in tps})
        dump_tasks()
        logging.shutdown()
        os._exit(EXIT_STALLED)


async def reseek_quiet_partitions(ends: dict[Any, int]) -> None:
    """A safety net: clicks wait on a partition, yet none reached the agent for ``RESEEK_AFTER_S`` with no batch
    in flight: seek the consumer back to the next offset the agent expects (logged, counted)."""
    if not ledger.accepting or any(not f.done() for f in in_flight):
        arrivals.not_watching()
        return
    quiet = arrivals.stalled({(tp.topic, tp.partition): end for tp, end in ends.items()}, ledger.next_offsets())
    for (topic, partition), (expected, end) in sorted(quiet.items()):
        log.warning("%s[%d]: no click reached the agent for %.0fs while offsets %d to %d wait; seeking back to %d",
                    topic, partition, RESEEK_AFTER_S, expected, end - 1, expected)
        metrics.reseeks.inc()
        await app.consumer.seek(TP(topic, partition), expected)
    if quiet:
        arrivals.not_watching()


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
        runtime.pending = await start_engine(first=False)
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
    if result.forgotten_writes or result.dropped_forgotten:
        metrics.forgotten_users.inc(len(result.forgotten_now))
        metrics.dropped_forgotten.inc(result.dropped_forgotten)
        if result.forgotten_now:
            log.info("forgot %d users: windows and audience states deleted, recorded on %s",
                     len(result.forgotten_now), settings.forgotten_topic)
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
                          stop_uncommitted)
        took = time.monotonic() - started
        self.scanned, self.expired, self.slices = self.scanned + len(items), self.expired + len(stale), self.slices + 1
        self.seconds, self.longest_s = self.seconds + took, max(self.longest_s, took)
        counters.expired += len(stale)
        metrics.expired_windows.inc(len(stale))
        if self.after is None:
            log.info("idle windows: %d of %d expired in %d slices of %d (%.0f ms in all, the longest %.1f ms)",
                     self.expired, self.scanned, self.slices, EXPIRY_SLICE, self.seconds * 1000, self.longest_s * 1000)
        return self.after is None
