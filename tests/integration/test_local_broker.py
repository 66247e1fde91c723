"""deploy/kafka/kafka.sh on its own ports and state folder: idempotent start, clean stop, durable data."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from core.kafka import ensure_topics, send_all
from core.settings import Settings
from tests.conftest import REPO
from tests.integration.conftest import KAFKA_SH, consume, port_open, read_all

PORT, CONTROLLER_PORT = 19092, 19093


def kafka(command: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_PORT": str(PORT), "KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
           "KAFKA_STATE_DIR": str(state), "KAFKA_HEAP_OPTS": "-Xmx512m"}
    return subprocess.run([str(KAFKA_SH), command], capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.slow
def test_start_twice_stop_and_restart_keeps_data(tmp_path: Path) -> None:
    if port_open("127.0.0.1", PORT):
        pytest.skip(f"port {PORT} is taken by something else")
    state = tmp_path / "kafka"
    try:
        first = kafka("up", state)
        assert first.returncode == 0, first.stdout + first.stderr + kafka("log", state).stdout
        pid = (state / "broker.pid").read_text().strip()
        again = kafka("up", state)
        assert again.returncode == 0 and f"already running (pid {pid})" in again.stdout
        assert subprocess.run(["pgrep", "-f", f"kafka.Kafka {state}/server.properties"],
                              capture_output=True, text=True).stdout.split() == [pid]

        s = Settings(broker=f"127.0.0.1:{PORT}", partitions=1)
        ensure_topics(s, ["durable"])
        assert send_all(s, "durable", [(b"k", b"written before the restart", None)]).sent == 1

        down = kafka("down", state)
        assert down.returncode == 0, down.stderr
        assert not port_open("127.0.0.1", PORT)
        assert not Path(f"/proc/{pid}").exists()

        assert kafka("up", state).returncode == 0
        (record,) = consume(s, "durable", 1, timeout_s=60)
        assert record.value == b"written before the restart"
    finally:
        kafka("down", state)


@pytest.mark.slow
def test_produce_survives_a_broker_restart_and_logs_the_outage_briefly(tmp_path: Path) -> None:
    import sys
    import threading
    import time

    from tests.integration.conftest import wait_until_ready

    if port_open("127.0.0.1", PORT):
        pytest.skip(f"port {PORT} is taken by something else")
    state = tmp_path / "kafka"
    try:
        assert kafka("up", state).returncode == 0
        wait_until_ready(f"127.0.0.1:{PORT}")
        s = Settings(broker=f"127.0.0.1:{PORT}", partitions=2)
        ensure_topics(s, ["clicks"])
        checkpoint = tmp_path / "produce.checkpoint"
        cmd = [sys.executable, "-m", "cli.main", "produce", "--synthetic", "--events", "20000", "--rate", "1000",
               "--broker", s.broker, "--topic", "clicks", "--checkpoint", str(checkpoint), "-q"]
        produce = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(6)  # mid-way: about 6,000 clicks sent
        outage = threading.Thread(target=lambda: (kafka("down", state), time.sleep(5), kafka("up", state)))
        outage.start()
        out, err = produce.communicate(timeout=300)
        outage.join()
        assert produce.returncode == 0, err[-3000:]
        assert "Unable connect to node" in err and "more like this in the last" in err  # the outage happened
        assert len(err.splitlines()) < 80, err[-3000:]  # ... and its thousands of client errors were throttled
        # the whole topic, not its first 20,000 records: a retried batch may repeat, and repeats would then
        # push the newest clicks past the count
        records = read_all(s, "clicks", timeout_s=120)
        assert len({r.value for r in records}) == 20_000  # every click delivered
        assert json.loads(checkpoint.read_text())["delivered"] == 20_000
    finally:
        kafka("down", state)
