"""Kafka clients built from the settings; an unreachable broker is one BrokerUnavailable.

kafka-python serves admin work and simple consumers; bulk sends go through aiokafka (Faust's own client)
record batches, see :func:`send_all`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import IllegalSaslStateError, KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from core.errors import AuthenticationFailed, BrokerUnavailable, ClickstreamError, ConfigError
from core.settings import Settings

BOOTSTRAP_TIMEOUT_MS = 5000


def unreachable(settings: Settings, seen: Sequence[str] = ()) -> BrokerUnavailable:
    """The one error for a broker that cannot be used, whichever client found out, naming the cause that the
    client's own log lines (``seen``) point to: nothing listening, authentication, or the wrong protocol."""
    at, protocol = settings.broker, settings.security_protocol
    text = " | ".join(seen)
    accepted: list[str] | None = None
    named = ("UnsupportedSaslMechanism", "IllegalSaslState", "CERTIFICATE", "ALERT_", "Handshake failed")
    if protocol.startswith("SASL") and not any(cause in text for cause in named):
        # kafka-python's log lines race with the broker closing the connection (only "socket disconnected", or
        # nothing that names the cause, may be seen): ask the listener itself which mechanisms it accepts
        answer = sasl_handshake(settings)
        if answer is not None:
            error, accepted = answer
            if error == IllegalSaslStateError.errno:
                text += " | IllegalSaslState"
            elif settings.sasl_mechanism not in accepted:
                text += " | UnsupportedSaslMechanism"
            else:  # a SASL listener that takes the mechanism answered: what failed is the login itself
                text += " | SaslAuthenticationFailed"
    if "UnsupportedSaslMechanism" in text:
        offered = f"; it accepts {', '.join(accepted)}" if accepted else ""
        return AuthenticationFailed(f"the broker at {at} does not accept SASL mechanism {settings.sasl_mechanism} "
                                    f"(CLICKSTREAM_SASL_MECHANISM){offered}")
    if "IllegalSaslState" in text:
        return AuthenticationFailed(f"{at} is not a SASL listener, but {protocol} was used: check the port and "
                                    "CLICKSTREAM_SECURITY_PROTOCOL")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return AuthenticationFailed(f"the TLS certificate of the broker at {at} is not trusted (set "
                                    "CLICKSTREAM_SSL_CAFILE to the CA that signed it)")
    if any(alert in text for alert in ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_CERTIFICATE_UNKNOWN")):
        given = (f"the one in {settings.ssl_certfile}" if settings.ssl_certfile
                 else "none was given")
        return AuthenticationFailed(f"the broker at {at} refused this client's TLS certificate ({given}): it asks "
                                    "for one signed by a CA it trusts (CLICKSTREAM_SSL_CERTFILE, CLICKSTREAM_SSL_KEYFILE)")
    handshake = [m for m in seen if "Handshake failed" in m]
    if handshake:
        reason = handshake[0].split("Handshake failed:", 1)[-1].strip()[:120]
        return AuthenticationFailed(f"the TLS handshake with {at} failed ({reason}): is it a TLS listener?")
    if "SaslAuthenticationFailed" in text or ("socket disconnected" in text and protocol.startswith("SASL")):
        return AuthenticationFailed(f"authentication failed at {at}: the broker closed the connection after "
                                    f"{settings.sasl_mechanism} authentication of user {settings.sasl_username!r} "
                                    "(wrong user name or password?)")
    if "socket disconnected" in text:
        return AuthenticationFailed(f"{at} closed the connection before answering a {protocol} client: it may "
                                    "expect SASL or TLS (check the port and CLICKSTREAM_SECURITY_PROTOCOL)")
    return BrokerUnavailable(f"no Kafka broker answered at {at} (start one with `make kafka-up`, "
                             f"or set CLICKSTREAM_BROKER)")


def sasl_handshake(settings: Settings, timeout_s: float = 5.0) -> tuple[int, list[str]] | None:
    """The broker's answer to one SaslHandshake request for the configured mechanism, on a connection of its own
    (TLS first for SASL_SSL): its error code and the mechanisms the listener accepts; None without an answer."""
    import socket

    from kafka.protocol.parser import KafkaProtocol
    from kafka.protocol.sasl import SaslHandshakeRequest

    host, port = settings.broker.split(",")[0].strip().rsplit(":", 1)
    protocol = KafkaProtocol(client_id="clickstream")
    protocol.send_request(SaslHandshakeRequest(mechanism=settings.sasl_mechanism or "", version=1))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
            context = settings.ssl_context()
            conn = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
            conn.sendall(protocol.send_bytes())
            while data := conn.recv(65536):
                for _, response in protocol.receive_bytes(data):
                    return response.error_code, list(response.mechanisms)
    except (OSError, ValueError, KafkaError):
        return None
    return None


class _ClientLog(logging.Handler):
    """Keeps the warnings and errors kafka-python logs while it bootstraps (it raises only a timeout)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 100:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def broker_errors(settings: Settings) -> Iterator[None]:
    """Turn the client's bootstrap timeout into one clear error that names its cause."""
    client_log = _ClientLog()
    logger = logging.getLogger("kafka")
    logger.addHandler(client_log)
    propagate, logger.propagate = logger.propagate, False  # the cause is told once, in the error below
    try:
        yield
    except KafkaTimeoutError as exc:
        if "bootstrap" in str(exc).lower():
            raise unreachable(settings, client_log.messages) from None
        raise
    finally:
        logger.removeHandler(client_log)
        logger.propagate = propagate


def admin(settings: Settings) -> KafkaAdminClient:
    with broker_errors(settings):
        return KafkaAdminClient(**settings.kafka_python_config(), bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)


def ensure_topics(settings: Settings, names: Iterable[str], partitions: int | None = None,
                  configs: dict[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet (with these topic ``configs``); return the names created."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        created = []
        for name in wanted:
            try:
                client.create_topics([NewTopic(name, partitions or settings.partitions,
                                               settings.replication_factor, topic_configs=configs or {})])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        _wait_for_leaders(settings, client, created)
        return created
    finally:
        client.close()


def _wait_for_leaders(settings: Settings, client: KafkaAdminClient, topics: list[str],
                      timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while topics:
        described = client.describe_topics(topics)
        if all(t.get("partitions") and all(p.get("leader_id", -1) >= 0 for p in t["partitions"])
               for t in described):
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topics {topics} have no leader after {timeout_s:.0f}s at {settings.broker}")
        time.sleep(0.2)


def partition_counts(settings: Settings, names: Iterable[str]) -> dict[str, int]:
    """Partitions of each of ``names`` that exists (missing topics are left out)."""
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n in existing]
        described = {t["name"]: len(t["partitions"]) for t in client.describe_topics(wanted)} if wanted else {}
        return {name: described[name] for name in wanted}
    finally:
        client.close()


def check_co_partitioned(settings: Settings, names: Iterable[str]) -> None:
    """Topics whose keys must meet on the same partition number need the same partition count."""
    counts = partition_counts(settings, names)
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} has {n}" for name, n in counts.items())
        raise ConfigError(f"topics must have the same number of partitions for each user's clicks and window to "
                          f"meet on one worker: {listed}; add partitions to the smaller ones "
                          f"(kafka-topics.sh --alter --partitions N) or use a new app id with CLICKSTREAM_PARTITIONS")


def consumer_at(settings: Settings, topic: str, *, from_beginning: bool,
                **overrides: Any) -> KafkaConsumer:
    """A group-less consumer assigned to every partition of ``topic`` at its beginning or its end."""
    config = dict(settings.kafka_python_config(), enable_auto_commit=False, group_id=None,
                  bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS)
    config.update(overrides)
    with broker_errors(settings):
        consumer = KafkaConsumer(**config)
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        consumer.close()
        raise ClickstreamError(f"topic {topic!r} does not exist at {settings.broker} (run `clickstream topics`)")
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    if from_beginning:
        consumer.seek_to_beginning(*assigned)
    else:
        consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the end offsets now, so that nothing sent after this call is missed
            consumer.position(tp)
    return consumer


def read_to_end(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` up to its current end (offset gaps of compacted topics included); TimeoutError
    if it is not read within ``timeout_s``."""
    consumer = consumer_at(settings, topic, from_beginning=True)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        ends = consumer.end_offsets(list(consumer.assignment()))
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def topic_size(settings: Settings, topic: str) -> int:
    """Records in ``topic``: the sum of its partitions' end offsets."""
    consumer = consumer_at(settings, topic, from_beginning=False)
    try:
        return sum(consumer.end_offsets(list(consumer.assignment())).values())
    finally:
        consumer.close()


@dataclass
class SendStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    first_error: str | None = None
    failed_indexes: list[int] = field(default_factory=list)  # positions (0-based, send order) not delivered
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe_failures(self, limit: int = 5) -> str:
        """The messages not delivered, as 1-based ranges in send order (what a rerun must cover)."""
        runs: list[list[int]] = []
        for i in sorted(self.failed_indexes):
            if runs and i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        text = ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs[:limit])
        return text + (", ..." if len(runs) > limit else "")


Message = tuple[bytes | None, bytes, int | None]  # key, value, timestamp_ms
RETRIES = 5
RETRY_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)


def send_all(settings: Settings, topic: str, messages: Iterable[Message],
             *, due_s: Callable[[int, int | None], float] | None = None,
             on_delivered: Callable[[int], None] | None = None, retries: int = RETRIES) -> SendStats:
    """Send keyed messages to ``topic`` and wait until all are acknowledged; failures are counted, not lost.

    ``due_s(i, timestamp_ms)`` gives the earliest time (seconds after the first send) for message ``i``,
    for paced sends. ``on_delivered(n)`` is told, now and then, that the first n messages are delivered
    (for checkpoints). A batch that fails with a retriable error (a leader moving during a broker restart, a
    timeout) is sent again, up to ``retries`` times with growing pauses; what still fails is counted and its
    positions kept in :attr:`SendStats.failed_indexes`. Messages are packed into per-partition record batches
    with aiokafka's compiled batch builder and the Java client's murmur2 partitioner (same partition as any
    other Kafka client): about 15x the per-message rate of kafka-python's producer on this machine.
    """
    return asyncio.run(_send_all(settings, topic, messages, due_s, on_delivered, retries))


@dataclass
class _Batch:
    builder: Any
    partition: int
    items: list[tuple[int, Message]]  # (message index, message)
    attempt: int = 0


async def _send_all(settings: Settings, topic: str, messages: Iterable[Message],
                    due_s: Callable[[int, int | None], float] | None,
                    on_delivered: Callable[[int], None] | None, retries: int) -> SendStats:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.partitioner import murmur2

    stats = SendStats()
    prod = AIOKafkaProducer(**settings.aiokafka_config(), acks="all", linger_ms=5,
                            max_batch_size=512 * 1024, request_timeout_ms=30_000)
    try:
        await prod.start()
    except KafkaConnectionError:
        await prod.stop()
        raise unreachable(settings) from None
    try:
        partitions = sorted(await prod.partitions_for(topic))
        open_batches: dict[int, _Batch] = {}
        in_flight: list[tuple[asyncio.Future[Any], _Batch]] = []
        retry_queue: list[tuple[float, _Batch]] = []  # (not before, batch)
        appended = 0

        def new_batch(partition: int, attempt: int = 0) -> _Batch:
            return _Batch(prod.create_batch(), partition, [], attempt)

        async def ship(batch: _Batch) -> None:
            batch.builder.close()
            in_flight.append((await prod.send_batch(batch.builder, topic, partition=batch.partition), batch))

        async def ship_open() -> None:
            for partition in list(open_batches):
                await ship(open_batches.pop(partition))

        async def append(partition: int, index: int, message: Message, attempt: int = 0) -> None:
            key, value, ts_ms = message
            batch = open_batches.get(partition)
            if batch is None or batch.attempt != attempt:
                if batch is not None:
                    await ship(open_batches.pop(partition))
                batch = open_batches[partition] = new_batch(partition, attempt)
            if batch.builder.append(key=key, value=value, timestamp=ts_ms) is None:  # full
                await ship(open_batches.pop(partition))
                batch = open_batches[partition] = new_batch(partition, attempt)
                if batch.builder.append(key=key, value=value, timestamp=ts_ms) is None:
                    raise ClickstreamError(f"message {index + 1} ({len(value)} bytes) exceeds the batch size")
            batch.items.append((index, message))

        def reap() -> None:
            keep = []
            for fut, batch in in_flight:
                if not fut.done():
                    keep.append((fut, batch))
                    continue
                exc = fut.exception()
                if exc is None:
                    stats.sent += len(batch.items)
                elif getattr(exc, "retriable", False) and batch.attempt < retries:
                    stats.retried += len(batch.items)
                    pause = RETRY_BACKOFF_S[min(batch.attempt, len(RETRY_BACKOFF_S) - 1)]
                    retry_queue.append((time.monotonic() + pause, batch))
                else:
                    stats.failed += len(batch.items)
                    stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"
                    stats.failed_indexes.extend(index for index, _ in batch.items)
            in_flight[:] = keep
            if on_delivered is not None:
                batches = [b for _, b in in_flight] + list(open_batches.values()) + [b for _, b in retry_queue]
                pending = [min(index for index, _ in b.items) for b in batches if b.items]
                pending += stats.failed_indexes[:1] and [min(stats.failed_indexes)]
                on_delivered(min(pending, default=appended))

        async def resend_due(wait: bool) -> None:
            while retry_queue:
                retry_queue.sort(key=lambda entry: entry[0])
                not_before, batch = retry_queue[0]
                if not_before > time.monotonic():
                    if not wait:
                        return
                    await asyncio.sleep(not_before - time.monotonic())
                retry_queue.pop(0)
                for index, message in batch.items:
                    await append(batch.partition, index, message, batch.attempt + 1)
                await ship_open()

        start = time.perf_counter()
        for i, message in enumerate(messages):
            if due_s is not None:
                wait = start + due_s(i, message[2]) - time.perf_counter()
                if wait > 0:
                    await ship_open()  # ahead of schedule: what is queued goes out now
                    await asyncio.sleep(wait)
            key = message[0]
            if key is None:  # unkeyed: spread round-robin
                partition = partitions[i % len(partitions)]
            else:
                partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            await append(partition, i, message)
            appended = i + 1
            if len(in_flight) > 64:
                reap()
                await resend_due(wait=False)
        await ship_open()
        while in_flight or retry_queue:
            await asyncio.gather(*(fut for fut, _ in in_flight), return_exceptions=True)
            reap()
            await resend_due(wait=True)
        reap()
        stats.elapsed_s = time.perf_counter() - start
    finally:
        await prod.stop()
    return stats
