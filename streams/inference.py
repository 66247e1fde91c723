"""Where each batch's per-click work runs: an inference process beside the worker's (the default), or a thread
of the worker's own process (``CLICKSTREAM_INFERENCE_PROCESS=false``, for a worker with one core).

Either way it is the same engine: :func:`serve` holds the predictor, a :class:`~streams.batch.BatchProcessor`
and a :class:`~streams.deriving.Deriving` and answers requests from a pair of queues, in order, each request
exactly one reply. It decodes and checks the clicks, updates the windows, calls the predictor, encodes the
predictions and derives category demand and audiences; the worker keeps what needs Faust (reading stored windows
and audience states, the holes, table writes, sends and commits). In the process, the event loop's thread reads
the next batch while the child works on one.

A batch's request holds its messages, the stored windows of their keys and a new assignment if one came before it
(with the forgotten users and audience states of the partitions held now, read from their tables); the engine
prefers the windows it wrote itself in its last two batches (their table writes may still be on the way), and
forgets them when the consumer group's generation changes (a rebalance may have moved users). An engine that dies
ends the worker through the failed batch. When a new model's engine takes over, it adopts the open demand windows,
audience gates and forgotten users of the one before. The predictor is built by name
(``CLICKSTREAM_PREDICTOR_FACTORY``), so that a wrapped or fault-injecting predictor runs in either mode.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import importlib
import logging
import multiprocessing
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.errors import ModelError
from streams.batch import Message
from streams.deriving import Deriving, DerivingConfig, Reassignment

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """What the child needs to build its predictor and processor (picklable)."""

    model_dir: str
    top_k: int
    threads: int
    batch_sizes: tuple[int, ...]
    lengths: tuple[int, ...]
    drivers: int
    click_schema_id: int | None
    prediction_schema_id: int | None
    codec_options: dict[str, Any]
    deriving: DerivingConfig
    predictor_factory: str = "model.predictor:Predictor"  # module:callable, called like Predictor
    runtime: str = "numpy"  # model.predictor.RUNTIMES
    # "first": serve once one shape is traced, compile the others one after a batch each (as the worker does in
    # its own process); "all": every shape compiled before the child is ready (a model rolled out later)
    warm: str = "all"
    forget_topic: str | None = None  # its messages are forget requests (core/privacy.py)
    rekeyed_topic: str | None = None
    user_ids: Any = None  # core.privacy.UserIds: pseudonymous ids or not


def predictor_factory(name: str) -> Any:
    """The callable named ``module:attribute``."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def child_main(conn: Any, config: ChildConfig) -> None:
    """The inference process: end with the worker, then :func:`serve`."""
    _die_with_parent()
    serve(conn, config)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the worker's process ends, even by kill -9 or os._exit (a child
    stuck in the predictor would otherwise outlive it)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def serve(conn: Any, config: ChildConfig) -> None:
    """The engine: load and warm the model, then answer requests until the queue closes."""
    from core.records import Click, Prediction
    from schemas.codec import RecordCodec
    from streams.batch import BatchProcessor

    try:
        predictor = predictor_factory(config.predictor_factory)(
            config.model_dir, top_k=config.top_k, threads=config.threads or None, batch_sizes=config.batch_sizes,
            lengths=config.lengths, drivers=config.drivers, warm="first" if config.warm == "first" else True,
            runtime=config.runtime)
        processor = BatchProcessor(
            click_codec=RecordCodec(Click, config.click_schema_id, **config.codec_options),
            prediction_codec=RecordCodec(Prediction, config.prediction_schema_id, **config.codec_options),
            window_length=predictor.window_length, model_version=predictor.version, forget_topic=config.forget_topic,
            rekeyed_topic=config.rekeyed_topic, user_ids=config.user_ids)
        deriving = Deriving(config.deriving)
    except ModelError as exc:  # a broken artifact: refused, the serving model kept (streams/agents.py)
        conn.send(("refused", str(exc)))
        return
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    gc.freeze()  # TensorFlow's objects out of the collector's sight, as in the worker (streams/agents.py)
    conn.send(("ready", predictor.version, predictor.window_length, predictor.warm_s, predictor.shapes_warm,
               predictor.shapes_total))
    try:
        _answer(conn, predictor, processor, deriving)
    except Exception as exc:  # the batch in hand fails: the worker stops without committing it
        log.error("inference engine failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        conn.send(EngineFailure(f"{type(exc).__name__}: {exc}"))
        conn.close()


@dataclasses.dataclass(frozen=True)
class EngineFailure:
    """The reply of an engine that could not answer a request: the worker raises it."""

    reason: str


def _answer(conn: Any, predictor: Any, processor: Any, deriving: Deriving) -> None:
    from streams.batch import predict_isolating

    to_compile = predictor.shapes_to_compile()
    recent: list[dict[bytes, bytes | None]] = [{}, {}]  # windows written by the last two batches, newest first
    generation = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            return
        kind = request[0]
        if kind == "batch":
            _, raw, stored, group_generation, reassignment = request
            if group_generation != generation:
                recent, generation = [{}, {}], group_generation
            if reassignment is not None:  # the forgotten users of the partitions held now, from the table
                processor.forgotten = dict(reassignment.forgotten)
            messages = [Message(*m) for m in raw]
            prepared = processor.prepare(messages, functools.partial(_newest, recent, stored))
            pieces, failed = (predict_isolating(predictor.predict, prepared.snapshots) if prepared.snapshots
                              else ([], {}))
            result = processor.complete(prepared, pieces, failed)
            recent = [{key: packed for key, (packed, _) in result.window_writes.items()}, recent[0]]
            result.derived = deriving.derive(messages, result, processor.window_length, reassignment)
            result.made = []  # used up here: not sent back
            conn.send(result)
        elif kind == "predict":
            conn.send(predictor.predict([request[1]]))
        elif kind == "handover":  # a new model's child takes over: the open windows, the gates, the forgotten
            conn.send((deriving.state(), processor.forgotten))
        elif kind == "adopt":
            deriving.adopt(request[1][0])
            processor.forgotten = request[1][1]
            conn.send(None)
        if to_compile:  # one shape after each answer: a request waits behind at most one (~4 s here)
            shape = to_compile.pop(0)
            try:
                predictor.warm([shape])
            except Exception as exc:  # the shape stays unused: batches keep running on the shapes that are ready
                log.error("model %s: compiling shape %s failed: %s: %s", predictor.version, shape,
                          type(exc).__name__, exc)
            if not to_compile:
                gc.freeze()


def _newest(recent: list[dict[bytes, bytes | None]], stored: dict[bytes, bytes | None], key: bytes) -> bytes | None:
    """A user's window: the child's own newest write of it (None: deleted), else the stored one the worker read."""
    for cache in recent:
        if key in cache:
            return cache[key]
    return stored.get(key)


class _QueueEnd:
    """One end of a pair of in-process queues, with the pipe's ``send``/``recv``/``close``: the engine's thread and
    the worker exchange the same requests and replies as over the inference process's pipe (without pickling)."""

    _CLOSED = object()

    def __init__(self, inbox: queue.SimpleQueue, outbox: queue.SimpleQueue) -> None:
        self._inbox, self._outbox = inbox, outbox

    @classmethod
    def pair(cls) -> tuple[_QueueEnd, _QueueEnd]:
        a, b = queue.SimpleQueue(), queue.SimpleQueue()
        return cls(a, b), cls(b, a)

    def send(self, obj: Any) -> None:
        self._outbox.put(obj)

    def recv(self) -> Any:
        obj = self._inbox.get()
        if obj is self._CLOSED:
            self._inbox.put(obj)  # every later read ends too
            raise EOFError("the other end is closed")
        return obj

    def close(self) -> None:
        self._outbox.put(self._CLOSED)


class Inference:
    """The worker's handle on its engine (:func:`serve`), in a child process or in a thread: start it, hand it
    batches, close it. ``version`` and ``window_length`` are the engine's model's, as a
    :class:`model.predictor.Predictor` has them."""

    def __init__(self, config: ChildConfig, in_process: bool = False) -> None:
        self.config = config
        self.process: Any = None
        if in_process:
            self._conn, engine_end = _QueueEnd.pair()
            self.thread = threading.Thread(target=serve, args=(engine_end, config), daemon=True, name="inference")
            self.thread.start()
        else:
            context = multiprocessing.get_context("spawn")  # no copy of the worker's threads and event loop
            self._conn, child_end = context.Pipe()
            self.process = context.Process(target=child_main, args=(child_end, config), daemon=True,
                                           name="clickstream-inference")
            self.process.start()
            child_end.close()
        # requests go out and replies come in on threads of their own, in order: the event loop never blocks
        # on the pipe, and each reply resolves the future of its request
        self._send = ThreadPoolExecutor(1, thread_name_prefix="inference-send")
        self._receive = ThreadPoolExecutor(1, thread_name_prefix="inference-receive")
        self.version = ""
        self.window_length = 0
        self.warm_s = 0.0
        self.shapes_warm = self.shapes_total = 0

    async def ready(self) -> Inference:
        """Wait until the engine has loaded and warmed its model; raise if it could not."""
        reply = await self._request(None)
        if reply[0] != "ready":
            self.close()
            if reply[0] == "refused":
                raise ModelError(reply[1])
            raise RuntimeError(f"the inference engine could not load the model at {self.config.model_dir}: "
                               f"{reply[1]}")
        _, self.version, self.window_length, self.warm_s, self.shapes_warm, self.shapes_total = reply
        return self

    def _request(self, request: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if request is not None:
            loop.run_in_executor(self._send, self._conn.send, request)
        return loop.run_in_executor(self._receive, self._reply)

    def _reply(self) -> Any:
        reply = self._conn.recv()
        if isinstance(reply, EngineFailure):
            raise RuntimeError(f"the inference engine failed: {reply.reason}")
        return reply

    def batch(self, messages: list[Message], stored: dict[bytes, bytes | None], generation: int,
              reassignment: Reassignment | None) -> asyncio.Future[Any]:
        """Start one batch, with the stored windows of its keys; the future gives its
        :class:`~streams.batch.BatchResult`, with its derivation (EOFError: the engine died)."""
        raw = [(m.key, m.value, m.topic, m.partition, m.offset, m.received_s) for m in messages]
        return self._request(("batch", raw, stored, generation, reassignment))

    async def take_over_from(self, old: Inference) -> None:
        """Adopt the open demand windows and audience gates of ``old``'s engine (no batch in flight in either)."""
        await self._request(("adopt", await old._request(("handover",))))

    async def predict_one(self, window: Any) -> Any:
        """One window's prediction (the web view of a user's intent), in turn with the batches."""
        return await self._request(("predict", window))

    def close(self) -> None:
        """Close the pipe: the engine's next read ends it (never waited for here: the event loop goes on)."""
        self._conn.close()
        self._send.shutdown(wait=False)
        self._receive.shutdown(wait=False)
