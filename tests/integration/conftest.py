"""The real local Kafka broker for integration tests: reused when running, else started (and stopped)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from core.kafka import consumer_at, read_to_end
from core.records import Click
from core.settings import Settings
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
                    dead_letter_topic=f"dead-{run}", demand_topic=f"demand-{run}", audiences_topic=f"audiences-{run}",
                    forget_topic=f"forget-{run}", forgotten_topic=f"forgotten-{run}", app_id=f"test-{run}", partitions=4)


def consume_until(settings: Settings, topic: str, done: Callable[[Any], bool], timeout_s: float,
                  describe: Callable[[], str] = lambda: "") -> None:
    """Feed the records of ``topic`` (from its beginning) to ``done`` until it returns True; fail after
    ``timeout_s``."""
    consumer = consumer_at(settings, topic, from_beginning=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not done within {timeout_s}s {describe()}")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    if done(record):
                        return
    finally:
        consumer.close()


def consume(settings: Settings, topic: str, count: int, timeout_s: float = 60.0) -> list[Any]:
    """Read ``count`` records of ``topic`` from its beginning, failing after ``timeout_s``."""
    records: list[Any] = []

    def take(record: Any) -> bool:
        records.append(record)
        return len(records) >= count

    if count:
        consume_until(settings, topic, take, timeout_s, lambda: f"({len(records)} of {count} records)")
    return records


def read_all(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` up to its current end (offset gaps of compacted topics included)."""
    return read_to_end(settings, topic, timeout_s)


def sample_clicks(n: int, prefix: str) -> list[Click]:
    """``n`` clicks from the start of the Taobao sample (fresh event ids), or synthetic without it."""
    import itertools

    from core.logs import read_log
    from core.synthetic import synthetic_clicks
    from tests.conftest import data_dir

    root = data_dir()
    sample = root / "taobao" / "UserBehavior-sample.csv" if root else None
    if sample is not None and sample.is_file():
        return list(itertools.islice(read_log(sample, "taobao", id_prefix=prefix), n))
    return list(synthetic_clicks(max(10, n // 20), n, seed=7, id_prefix=prefix,
                                 start_ms=1_511_500_000_000))


def train_small_model(root: Path, seed: int, clicks: int = 30_000) -> Path:
    """A small model trained in seconds on the first sample clicks (or synthetic ones)."""
    from model.train import TrainConfig, train

    root.mkdir(parents=True, exist_ok=True)
    log = root / "train.csv"
    with open(log, "w") as f:
        for c in sample_clicks(clicks, "train"):
            behaviour = {"view": "pv", "purchase": "buy"}.get(c.event_type, c.event_type)
            f.write(f"{c.user_id},{c.item_id},{c.category_id},{behaviour},{c.event_time_ms // 1000}\n")
    config = TrainConfig(window_length=50, lstm_units=16, epochs=1, batch_size=512, seed=seed)
    train([log], "taobao", root / "model", config, verbose=0)
    return root / "model"


@pytest.fixture(scope="session")
def worker_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model the worker tests serve."""
    return train_small_model(tmp_path_factory.mktemp("worker-model"), seed=3)
