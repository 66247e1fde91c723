"""Authentication and protocol mistakes are named as such, in one line, by the CLI and the worker: a private
broker with a PLAINTEXT and a SASL_PLAINTEXT (SCRAM-SHA-256) listener, started for this module."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.worker_process import FAUST
from cli.main import main
from tests.conftest import REPO
from tests.integration.conftest import KAFKA_SH, port_open, wait_until_ready

PLAIN, CONTROLLER, SASL = 19292, 19293, 19294
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if any(port_open("127.0.0.1", p) for p in (PLAIN, CONTROLLER, SASL)):
        pytest.skip(f"ports {PLAIN}-{SASL} are taken by something else")
    env = {**os.environ, "KAFKA_PORT": str(PLAIN), "KAFKA_CONTROLLER_PORT": str(CONTROLLER),
           "KAFKA_SASL_PORT": str(SASL), "KAFKA_STATE_DIR": str(tmp_path_factory.mktemp("sasl-kafka")),
           "KAFKA_HEAP_OPTS": "-Xmx512m"}
    up = subprocess.run([str(KAFKA_SH), "up"], capture_output=True, text=True, env=env, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        wait_until_ready(f"127.0.0.1:{PLAIN}")
        yield
    finally:
        subprocess.run([str(KAFKA_SH), "down"], capture_output=True, text=True, env=env, timeout=120)


def sasl_env(port: int = SASL, **changes: str) -> dict[str, str]:
    env = {"CLICKSTREAM_BROKER": f"127.0.0.1:{port}", "CLICKSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "CLICKSTREAM_SASL_MECHANISM": "SCRAM-SHA-256", "CLICKSTREAM_SASL_USERNAME": "alice",
           "CLICKSTREAM_SASL_PASSWORD": "alice-secret"}
    env.update(changes)
    return env


CASES = {
    "right credentials": (sasl_env(), None),
    "wrong password": (sasl_env(CLICKSTREAM_SASL_PASSWORD="nope"),
                       f"error: authentication failed at 127.0.0.1:{SASL}: the broker closed the connection after "
                       "SCRAM-SHA-256 authentication of user 'alice' (wrong user name or password?)"),
    "wrong mechanism": (sasl_env(CLICKSTREAM_SASL_MECHANISM="SCRAM-SHA-512"),
                        f"error: the broker at 127.0.0.1:{SASL} does not accept SASL mechanism SCRAM-SHA-512 "
                        "(CLICKSTREAM_SASL_MECHANISM)"),
    "SASL to a plaintext port": (sasl_env(PLAIN), f"error: 127.0.0.1:{PLAIN} is not a SASL listener, but "
                                 "SASL_PLAINTEXT was used: check the port and CLICKSTREAM_SECURITY_PROTOCOL"),
    "plaintext to a SASL port": ({"CLICKSTREAM_BROKER": f"127.0.0.1:{SASL}"},
                                 f"error: 127.0.0.1:{SASL} closed the connection before answering a PLAINTEXT "
                                 "client: it may expect SASL or TLS (check the port and CLICKSTREAM_SECURITY_PROTOCOL)"),
    "TLS to a plaintext port": ({"CLICKSTREAM_BROKER": f"127.0.0.1:{PLAIN}", "CLICKSTREAM_SECURITY_PROTOCOL": "SSL"},
                                f"error: the TLS handshake with 127.0.0.1:{PLAIN} failed"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_cli_names_what_is_wrong(sasl_broker: None, case: str) -> None:
    env, expected = CASES[case]
    result = CliRunner().invoke(main, ["topics"], env=env)
    if expected is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 4
    (line,) = result.output.strip().splitlines()
    assert line.startswith(expected)


def test_the_worker_names_a_wrong_password_in_one_line(sasl_broker: None, worker_model: Path,
                                                      tmp_path: Path) -> None:
    env = {**os.environ, **sasl_env(CLICKSTREAM_SASL_PASSWORD="nope"), "CLICKSTREAM_MODEL_DIR": str(worker_model),
           "CLICKSTREAM_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([FAUST, "-A", "streams.app", "worker", "--without-web"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4
    assert done.stderr.strip().splitlines() == [CASES["wrong password"][1]]


CLOSED = ["<KafkaTCPTransport ...>: socket disconnected"]


@pytest.mark.parametrize(("changes", "seen", "expected"), [
    ({"CLICKSTREAM_SASL_MECHANISM": "SCRAM-SHA-512"}, CLOSED,
     CASES["wrong mechanism"][1] + "; it accepts SCRAM-SHA-256"),
    ({"CLICKSTREAM_BROKER": f"127.0.0.1:{PLAIN}"}, CLOSED, CASES["SASL to a plaintext port"][1]),
    ({"CLICKSTREAM_SASL_PASSWORD": "nope"}, CLOSED, CASES["wrong password"][1]),
    ({"CLICKSTREAM_SASL_PASSWORD": "nope"}, [], CASES["wrong password"][1]),
    ({"CLICKSTREAM_BROKER": "127.0.0.1:1"}, [], "error: no Kafka broker answered at 127.0.0.1:1"),
], ids=["wrong mechanism", "plaintext port", "wrong password", "wrong password, nothing logged", "nothing there"])
def test_a_sasl_cause_is_asked_of_the_broker_when_the_client_log_does_not_name_it(
        sasl_broker: None, changes: dict[str, str], seen: list[str], expected: str) -> None:
    # kafka-python may log only "socket disconnected" when the broker closes right after refusing a mechanism,
    # and the worker once saw nothing naming the cause of a wrong password at all
    from core.kafka import unreachable
    from core.settings import load_settings

    settings = load_settings(env={**sasl_env(), **changes})
    assert ("error: " + str(unreachable(settings, seen))).startswith(expected)
