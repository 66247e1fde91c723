"""The worker's per-batch logic, free of Faust: messages in -> predictions, dead letters, rekeys, window writes,
and forget requests handled (core/privacy.py).

The agent (``streams/agents.py``) is glue around :meth:`BatchProcessor.process`: it hands over the consumed
messages, a way to read stored windows and a way to run the predictor off the event loop, then sends and
stores what comes back. Every click of a batch ends up in exactly one place: a prediction, a dead letter
(with its reason), the rekeyed topic, or nowhere when its user is forgotten. A failure that cannot be pinned on
particular messages raises :class:`SystemicFailure`, and the worker stops without committing the batch
(``streams/agents.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from core.errors import DecodeError
from core.privacy import ForgetRequest, Forgotten, UserIds
from core.records import Click, Driver, Prediction, Timing
from model.window import Window
from schemas.codec import RecordCodec
from streams.window import UserWindow

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 256
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01: earlier clicks are corrupt, not history
MAX_FUTURE_MS = 24 * 3600 * 1000
ID_FIELDS = ("event_id", "user_id", "item_id", "category_id")
# The producer refuses requests over 1,000,000 bytes, while the broker accepts a little more: a dead letter
# carries at most this much of the original value and key, with headers telling the original size and hash.
DEAD_LETTER_MAX_VALUE_BYTES = 512 * 1024
DEAD_LETTER_MAX_KEY_BYTES = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """What the worker needs of one consumed Kafka message."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    received_s: float  # time.monotonic() when the worker read it


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: key, value and headers."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclasses.dataclass
class BatchResult:
    """What one batch produced. ``window_writes`` maps a user key to its packed window and the index of the
    user's newest message in the batch (Faust files a table write under the partition of that message);
    ``made`` holds each prediction with its click and the index of the click's message."""

    predictions: list[Outgoing] = dataclasses.field(default_factory=list)
    dead_letters: list[Outgoing] = dataclasses.field(default_factory=list)
    rekeyed: list[Outgoing] = dataclasses.field(default_factory=list)
    window_writes: dict[bytes, tuple[bytes | None, int]] = dataclasses.field(default_factory=dict)  # None: delete
    # forget requests (core/privacy.py): each requested user's new forgotten-users record, the users forgotten by
    # this batch (their window and audience state are deleted) with their request's message index, and the clicks
    # of forgotten users dropped
    forgotten_writes: dict[bytes, tuple[bytes, int]] = dataclasses.field(default_factory=dict)
    forget_rekeyed: list[Outgoing] = dataclasses.field(default_factory=list)  # requests sent round by pseudonym
    forgotten_now: dict[bytes, int] = dataclasses.field(default_factory=dict)
    dropped_forgotten: int = 0
    made: list[tuple[Click, Prediction, int]] = dataclasses.field(default_factory=list)  # and message index
    derived: Any = None  # streams.deriving.Derivation, made by the inference engine (streams/inference.py)
    newest_event_ms: int = 0
    window_s: float = 0.0  # decode, validate, window updates
    inference_s: float = 0.0


@dataclasses.dataclass
class Counters:
    clicks: int = 0
    predictions: int = 0
    dead_letters: int = 0
    rekeyed: int = 0
    batches: int = 0
    expired: int = 0
    forget_requests: int = 0
    dropped_forgotten: int = 0  # clicks of forgotten users


class BatchPredictionLike(Protocol):
    top_categories: list[list[tuple[str, float]]]
    event_type_probs: np.ndarray
    purchase_probability: np.ndarray
    window_lengths: np.ndarray
    event_types: tuple[str, ...]
    drivers: list[tuple[Driver, ...]] | None  # only from a predictor asked for them (explain_predictions)


class SystemicFailure(RuntimeError):
    """The predictor failed on every window of a batch: no message is to blame, the worker must stop."""


Piece = tuple[np.ndarray, BatchPredictionLike]  # rows of the batch, and their predictions


def predict_isolating(predict: Callable[[Sequence[Window]], BatchPredictionLike],
                      windows: Sequence[Window]) -> tuple[list[Piece], dict[int, str]]:
    """Predict ``windows``; when the predictor raises, bisect to find the windows it fails on.

    Returns the predicted pieces and the reason per failed row. A window is blamed only when it fails again
    on its own while the predictor still predicts a window it predicted before: a predictor that broke during
    the bisection (or fails on everything) raises :class:`SystemicFailure` rather than dead-lettering valid
    clicks. One call in the normal case.
    """
    pieces: list[Piece] = []
    failed: dict[int, str] = {}

    def run(rows: np.ndarray) -> None:
        try:
            pieces.append((rows, predict([windows[i] for i in rows])))
        except Exception as exc:
            if len(rows) == 1:
                failed[int(rows[0])] = f"prediction failed: {type(exc).__name__}: {exc}"[:500]
                return
            half = len(rows) // 2
            run(rows[:half])
            run(rows[half:])

    run(np.arange(len(windows)))
    if not failed:
        return pieces, failed
    for row in list(failed):  # once more, alone: a window that now succeeds was not the cause
        try:
            pieces.append((np.array([row]), predict([windows[row]])))
            del failed[row]
        except Exception:
            pass
    if not pieces:
        raise SystemicFailure(f"the predictor failed on all {len(windows)} windows of the batch: "
                              f"{next(iter(failed.values()))}")
    pieces.sort(key=lambda piece: int(piece[0][0]))  # in click order: a user's predictions stay in order
    if failed:
        known_good = int(pieces[0][0][0])
        try:
            predict([windows[known_good]])
        except Exception as exc:
            raise SystemicFailure(f"the predictor broke while isolating a failing window: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return pieces, failed


def check_click(value: Any, codec: RecordCodec[Click], now_ms: int) -> tuple[Click | None, str | None]:
    """(click, None) for a valid click, else (None, reason) for the dead-letter topic."""
    try:
        click = codec.decode(value)
    except DecodeError as exc:
        return None, f"undecodable: {exc}"
    for field in ID_FIELDS:
        if not getattr(click, field).strip():
            return None, f"missing {field}"
    for field in (*ID_FIELDS, "session_id"):
        text = getattr(click, field)
        if text is not None and len(text) > MAX_FIELD_CHARS:
            return None, f"{field} longer than {MAX_FIELD_CHARS} characters"
    if len(click.user_attributes) > 32 or any(len(k) + len(v) > MAX_FIELD_CHARS
                                              for k, v in click.user_attributes.items()):
        return None, "user_attributes too large"
    t = click.event_time_ms
    if t < MIN_EVENT_TIME_MS or t > now_ms + MAX_FUTURE_MS:
        return None, f"absurd event time {t}"
    return click, None


def dead_letter(message: Message, reason: str) -> Outgoing:
    """The dead letter of a message: its key and value (cut to what the producer takes) and the reason."""
    headers = [("reason", reason.encode()[:1000]), ("source_topic", message.topic.encode()),
               ("partition", str(message.partition).encode()), ("offset", str(message.offset).encode())]
    value, key = message.value, message.key
    if len(value) > DEAD_LETTER_MAX_VALUE_BYTES:
        headers += [("original_size", str(len(value)).encode()),
                    ("original_sha256", hashlib.sha256(value).hexdigest().encode())]
        value = value[:DEAD_LETTER_MAX_VALUE_BYTES]
    if key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES:
        headers += [("original_key_size", str(len(key)).encode()),
                    ("original_key_sha256", hashlib.sha256(key).hexdigest().encode())]
        key = key[:DEAD_LETTER_MAX_KEY_BYTES]
    return Outgoing(key, value, tuple(headers))


def update_windows(clicks: Sequence[Click], load: Callable[[bytes], bytes | None],
                   max_events: int) -> tuple[list[Window], dict[bytes, UserWindow]]:
    """Add each click to its user's window; return the window each click is predicted from, and the
    changed windows by user key. A click already in the window (re-delivered) is not added twice.

    A click is predicted from its user's events up to and including it, in event time: what came after it
    (a late click's successors, or the later clicks a re-delivered one has in its window by now) is left
    out: a re-delivered click is predicted from the events it was first predicted from (less those that later
    clicks pushed out of a full window). A click older than every event of a full window is predicted from
    itself alone."""
    windows: dict[bytes, UserWindow] = {}
    snapshots = []
    for click in clicks:
        key = click.key
        window = windows.get(key)
        if window is None:
            stored = load(key)
            window = UserWindow.empty()
            if stored is not None:
                try:
                    window = UserWindow.unpack(stored)
                except DecodeError as exc:
                    log.warning("window of user %r is corrupt (%s): starting a new one", click.user_id, exc)
            windows[key] = window
        window.add(click.event_id, click.category_id, click.event_type, click.event_time_ms, max_events)
        through = window.through(click.event_id)
        if not through:  # older than the whole full window: not kept in it
            window = UserWindow.empty()
            window.add(click.event_id, click.category_id, click.event_type, click.event_time_ms, max_events)
            through = 1
        snapshots.append(window.model_window(through))
    return snapshots, windows


def predictions_of(clicks: Sequence[Click], batch: BatchPredictionLike, model_version: str,
                   predicted_at_ms: int, timings: Sequence[Timing | None]) -> list[Prediction]:
    """One Prediction per click, in click order: the one place a Prediction is built. It carries the events
    that drove its top category when the predictor gives them (``CLICKSTREAM_EXPLAIN_PREDICTIONS``)."""
    # 'unknown' is never a training target: the distribution over the real types is renormalised to 1
    known = [j for j, n in enumerate(batch.event_types) if n != "unknown"]
    names = [batch.event_types[j] for j in known]
    probs = batch.event_type_probs[:, known]
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    drivers = batch.drivers
    return [Prediction(event_id=click.event_id, user_id=click.user_id, event_time_ms=click.event_time_ms,
                       predicted_at_ms=predicted_at_ms, model_version=model_version,
                       top_categories=tuple(batch.top_categories[i]),
                       next_event_type=dict(zip(names, probs[i].tolist())),
                       purchase_probability=float(batch.purchase_probability[i]),
                       window_length=int(batch.window_lengths[i]), timing=timings[i],
                       drivers=drivers[i] if drivers is not None else None)
            for i, click in enumerate(clicks)]


Infer = Callable[[Sequence[Window]], Awaitable[tuple[list[Piece], dict[int, str]]]]


@dataclasses.dataclass
class Prepared:
    """A batch decoded, checked and windowed (:meth:`BatchProcessor.prepare`), waiting for its predictions.
    ``sources`` holds the index of each click's message; ``model_version`` is the model the batch was
    windowed for, the one its predictions name even if the worker switches models before they are made."""

    messages: Sequence[Message]
    result: BatchResult
    clicks: list[Click]
    sources: list[int]
    snapshots: list[Window]
    model_version: str
    started: float
    windows_done: float


class BatchProcessor:
    """Turns micro-batches of consumed messages into what the worker sends and stores; keeps the counters
    and the stream time (the newest event time seen, against which idle windows expire)."""

    def __init__(self, *, click_codec: RecordCodec[Click], prediction_codec: RecordCodec[Prediction],
                 window_length: int, model_version: str, clock: Callable[[], float] = time.time,
                 forget_topic: str | None = None, rekeyed_topic: str | None = None,
                 user_ids: UserIds | None = None) -> None:
        self.click_codec, self.prediction_codec = click_codec, prediction_codec
        self.forget_topic = forget_topic  # its messages are forget requests, not clicks
        # with pseudonymous ids, clicks are keyed by their user's pseudonym, taken here for those of every topic but
        # the rekeyed one, whose clicks went round with their pseudonym already (core/privacy.py)
        self.rekeyed_topic, self.user_ids = rekeyed_topic, user_ids or UserIds(None)
        # the forgotten-users records (packed) of the partitions this processor handles: the table's, given at
        # each assignment (streams/inference.py), and those its own batches write
        self.forgotten: dict[bytes, bytes] = {}
        self.window_length, self.model_version = window_length, model_version
        self.clock = clock
        self.counters = Counters()
        self.stream_time_ms = 0

    async def process(self, messages: Sequence[Message], load: Callable[[bytes], bytes | None],
                      infer: Infer) -> BatchResult:
        """Validate, update windows, predict (``infer`` runs :func:`predict_isolating` off the event loop): the
        two halves below, which the inference engine (streams/inference.py) calls around its own predictor."""
        prepared = self.prepare(messages, load)
        pieces, failed = await infer(prepared.snapshots) if prepared.snapshots else ([], {})
        return self.complete(prepared, pieces, failed)

    def prepare(self, messages: Sequence[Message], load: Callable[[bytes], bytes | None]) -> Prepared:
        """Decode and check the messages, apply the forget requests, update the windows: dead letters, rekeys,
        forgotten-users records and window writes are final here; the predictions wait for the predictor's answer
        on ``snapshots`` (:meth:`complete`).

        A batch's forget requests take effect before its clicks (the two topics are not ordered with each other):
        a user forgotten by this batch has no click of it predicted, and the window and audience state it had are
        deleted; a click of a forgotten user is dropped unless its user was readmitted before its event time."""
        started = time.monotonic()
        now_ms = int(self.clock() * 1000)
        result = BatchResult()
        clicks: list[Click] = []
        sources: list[int] = []  # index of each click's message
        requests: list[tuple[ForgetRequest, int]] = []
        for i, message in enumerate(messages):
            if message.topic == self.forget_topic:
                try:
                    request = ForgetRequest.parse(message.key, message.value)
                except DecodeError as exc:
                    result.dead_letters.append(dead_letter(message, f"undecodable: {exc}"))
                    continue
                if self.user_ids.pseudonymous and not request.pseudonymous:  # round again, keyed by pseudonym
                    request = ForgetRequest(self.user_ids.key_of(request.user_id), request.readmit,
                                            request.requested_at_ms or now_ms, pseudonymous=True)
                    result.forget_rekeyed.append(Outgoing(request.key, request.to_json()))
                else:
                    requests.append((request, i))
                continue
            self.counters.clicks += 1
            click, reason = check_click(message.value, self.click_codec, now_ms)
            if click is None:
                result.dead_letters.append(dead_letter(message, reason or "invalid"))
                continue
            value = message.value
            if self.user_ids.pseudonymous and message.topic != self.rekeyed_topic:
                click = dataclasses.replace(click, user_id=self.user_ids.key_of(click.user_id))
                value = self.click_codec.encode(click)
            if message.key != click.key:
                # a click without its user's key lives on the wrong partition for its user's window: it goes
                # round again, keyed, through the rekeyed topic (co-partitioned with clicks)
                result.rekeyed.append(Outgoing(click.key, value))
                continue
            clicks.append(click)
            sources.append(i)
        records = self.forget(requests, {click.key for click in clicks}, now_ms, result)
        if records:
            kept = [(click, i) for click, i in zip(clicks, sources)
                    if (record := records.get(click.key)) is None or record.keeps(click.event_time_ms)]
            result.dropped_forgotten = len(clicks) - len(kept)
            self.counters.dropped_forgotten += result.dropped_forgotten
            clicks, sources = [c for c, _ in kept], [i for _, i in kept]
            erased = result.forgotten_now
            load = (lambda key, stored=load: None if key in erased else stored(key)) if erased else load
        snapshots: list[Window] = []
        if clicks:
            snapshots, windows = update_windows(clicks, load, self.window_length)
            newest_message = {click.key: i for click, i in zip(clicks, sources)}
            result.window_writes.update((key, (w.pack(), newest_message[key])) for key, w in windows.items())
            result.newest_event_ms = max(w.newest_ms for w in windows.values())
            self.stream_time_ms = max(self.stream_time_ms, result.newest_event_ms)
        result.window_s = time.monotonic() - started
        self.counters.dead_letters += len(result.dead_letters)
        self.counters.rekeyed += len(result.rekeyed)
        return Prepared(messages, result, clicks, sources, snapshots, self.model_version, started,
                        started + result.window_s)

    def forget(self, requests: Sequence[tuple[ForgetRequest, int]], click_keys: Iterable[bytes], now_ms: int,
               result: BatchResult) -> dict[bytes, Forgotten]:
        """Apply a batch's forget requests, in order, to ``result`` (the new forgotten-users records; the users
        forgotten, whose window is deleted) and to :attr:`forgotten`; return the forgotten-users record of every
        user of the requests and of ``click_keys`` that has one."""
        if not requests and not self.forgotten:
            return {}
        records: dict[bytes, Forgotten | None] = {}

        def record_of(key: bytes) -> Forgotten | None:
            if key not in records:
                stored = self.forgotten.get(key)
                try:
                    records[key] = Forgotten.unpack(stored) if stored is not None else None
                except DecodeError as exc:  # kept forgotten: a corrupt record never readmits anyone
                    log.warning("forgotten-users record of %r is corrupt (%s): the user stays forgotten", key, exc)
                    records[key] = Forgotten(0)
            return records[key]

        for request, i in requests:
            key = request.key
            record = Forgotten.after(record_of(key), request, now_ms)
            if record is None:
                log.info("readmission of user %r, who is not forgotten: nothing to do", request.user_id)
                continue
            records[key] = record
            result.forgotten_writes[key] = (record.pack(), i)
            if not request.readmit:
                result.forgotten_now[key] = i
                result.window_writes[key] = (None, i)
        self.counters.forget_requests += len(requests)
        self.forgotten.update((key, packed) for key, (packed, _) in result.forgotten_writes.items())
        for key in click_keys:
            record_of(key)
        return {key: record for key, record in records.items() if record is not None}

    def complete(self, prepared: Prepared, pieces: Sequence[Piece], failed: dict[int, str]) -> BatchResult:
        """The batch's result with its predictions, given what the predictor made of ``prepared.snapshots``
        (:func:`predict_isolating`'s answer): a prediction per click, a dead letter per window it failed on."""
        inferred = time.monotonic()
        result, messages, clicks, sources = prepared.result, prepared.messages, prepared.clicks, prepared.sources
        result.inference_s = inferred - prepared.windows_done if clicks else 0.0
        for row, reason in sorted(failed.items()):
            result.dead_letters.append(dead_letter(messages[sources[row]], reason))
        self.counters.dead_letters += len(failed)
        predicted_at_ms = int(self.clock() * 1000)
        for rows, batch in pieces:
            timings = [Timing(batch_size=len(clicks),
                              batch_wait_ms=(prepared.started - messages[sources[r]].received_s) * 1000,
                              window_ms=result.window_s * 1000, inference_ms=result.inference_s * 1000) for r in rows]
            piece_clicks = [clicks[r] for r in rows]
            for r, click, p in zip(rows, piece_clicks, predictions_of(piece_clicks, batch, prepared.model_version,
                                                                      predicted_at_ms, timings)):
                result.predictions.append(Outgoing(click.key, self.prediction_codec.encode(p)))
                result.made.append((click, p, sources[r]))  # for demand and audiences (streams/derived.py)
        self.counters.predictions += len(result.predictions)
        self.counters.batches += 1
        return result


def stale_keys(items: Iterable[tuple[bytes, bytes | None]], stream_time_ms: int, ttl_ms: int) -> list[bytes]:
    """Keys of packed windows whose newest event is older than ``ttl_ms`` before ``stream_time_ms``."""
    horizon = stream_time_ms - ttl_ms
    return [key for key, value in items if value is not None and UserWindow.newest_ms_of(value) < horizon]
