"""deploy/kafka/kafka.sh on its own ports and state folder: idempotent start, clean stop, durable data."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.kafka import ensure_topics, send_all
from core.settings import Settings
from tests.integration.conftest import KAFKA_SH, consume, port_open

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
