"""The real local Kafka broker for integration tests: reused when running, else started (and stopped)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient

from streams.kafka_clients import consumer_at
from streams.settings import Settings
from tests.conftest import REPO

KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
BROKER = os.environ.get("CLICKSTREAM_TEST_BROKER", "127.0.0.1:9092")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until_ready(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Retry a metadata call until the broker answers it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=2000)
            client.list_topics()
            client.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    host, port = BROKER.rsplit(":", 1)
    started = False
    if not port_open(host, int(port)):
        result = subprocess.run([str(KAFKA_SH), "up"], capture_output=True, text=True,
                                env={**os.environ, "KAFKA_PORT": port})
        if result.returncode != 0:
            log = subprocess.run([str(KAFKA_SH), "log", "80"], capture_output=True, text=True).stdout
            pytest.exit(f"the Kafka broker did not start:\n{result.stdout}{result.stderr}\n{log}", returncode=3)
        started = True
    wait_until_ready(BROKER)
    yield BROKER
    if started:
        subprocess.run([str(KAFKA_SH), "down"], check=False, env={**os.environ, "KAFKA_PORT": port})


@pytest.fixture
def settings(broker: str) -> Settings:
    """Settings with topics and consumer group of this test alone."""
    run = uuid.uuid4().hex[:10]
    return Settings(broker=broker, clicks_topic=f"clicks-{run}", predictions_topic=f"predictions-{run}",
                    dead_letter_topic=f"dead-{run}", app_id=f"test-{run}", partitions=4)


def consume(settings: Settings, topic: str, count: int, timeout_s: float = 60.0) -> list[Any]:
    """Read ``count`` records of ``topic`` from its beginning, failing after ``timeout_s``."""
    consumer = consumer_at(settings, topic, from_beginning=True)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(records)} of {count} records from {topic} within {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def topic_size(settings: Settings, topic: str) -> int:
    """Number of records in ``topic`` (sum of end offsets)."""
    consumer = consumer_at(settings, topic, from_beginning=False)
    try:
        return sum(consumer.end_offsets(list(consumer.assignment())).values())
    finally:
        consumer.close()
