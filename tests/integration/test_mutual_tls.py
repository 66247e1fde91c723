"""Mutual TLS against a real listener: a private broker whose SSL listener requires client certificates, with a
test CA made here by openssl. The worker predicts over it; a missing client certificate and an untrusted broker
certificate are each one line from the CLI."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from core.kafka import ensure_topics, send_all
from core.settings import Settings
from tests.integration.conftest import KAFKA_SH, port_open, sample_clicks, wait_until_ready
from tests.integration.test_reliability import CLICK
from tests.integration.worker import predictions_by_event, worker_for

PLAIN, CONTROLLER, TLS = 19392, 19393, 19394
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=folder)


def make_signed(folder: Path, name: str, ca: str, san: str | None = None) -> None:
    """``name.crt`` and its PKCS#8 key ``name.key``, signed by ``ca``."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=folder)
    extra = []
    if san:
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", *extra, cwd=folder)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    make_ca(folder, "ca")
    make_ca(folder, "other-ca")  # trusted by nobody here
    make_signed(folder, "broker", "ca", san="IP:127.0.0.1,DNS:localhost")
    make_signed(folder, "alice", "ca")
    make_signed(folder, "mallory", "other-ca")
    (folder / "broker.pem").write_text((folder / "broker.crt").read_text() + (folder / "broker.key").read_text())
    return folder


@pytest.fixture(scope="module")
def tls_broker(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if any(port_open("127.0.0.1", p) for p in (PLAIN, CONTROLLER, TLS)):
        pytest.skip(f"ports {PLAIN}-{TLS} are taken by something else")
    env = {**os.environ, "KAFKA_PORT": str(PLAIN), "KAFKA_CONTROLLER_PORT": str(CONTROLLER),
           "KAFKA_SSL_PORT": str(TLS), "KAFKA_SSL_DIR": str(certs),
           "KAFKA_STATE_DIR": str(tmp_path_factory.mktemp("tls-kafka")), "KAFKA_HEAP_OPTS": "-Xmx512m"}
    up = subprocess.run([str(KAFKA_SH), "up"], capture_output=True, text=True, env=env, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        wait_until_ready(f"127.0.0.1:{PLAIN}")
        yield f"127.0.0.1:{TLS}"
    finally:
        subprocess.run([str(KAFKA_SH), "down"], capture_output=True, text=True, env=env, timeout=120)


def tls_env(certs: Path, **changes: str) -> dict[str, str]:
    env = {"CLICKSTREAM_BROKER": f"127.0.0.1:{TLS}", "CLICKSTREAM_SECURITY_PROTOCOL": "SSL",
           "CLICKSTREAM_SSL_CAFILE": str(certs / "ca.pem"), "CLICKSTREAM_SSL_CERTFILE": str(certs / "alice.crt"),
           "CLICKSTREAM_SSL_KEYFILE": str(certs / "alice.key")}
    env.update(changes)
    return {k: v for k, v in env.items() if v}


def test_the_cli_reaches_a_mutual_tls_listener_and_names_certificate_mistakes(tls_broker: str, certs: Path) -> None:
    ok = CliRunner().invoke(main, ["topics"], env=tls_env(certs))
    assert ok.exit_code == 0, ok.output

    untrusted = CliRunner().invoke(main, ["topics"], env=tls_env(certs, CLICKSTREAM_SSL_CAFILE=str(certs / "other-ca.pem")))
    assert untrusted.exit_code == 4
    (line,) = untrusted.output.strip().splitlines()
    assert line.startswith(f"error: the TLS certificate of the broker at {tls_broker} is not trusted")

    anonymous = CliRunner().invoke(main, ["topics"], env=tls_env(certs, CLICKSTREAM_SSL_CERTFILE="",
                                                                  CLICKSTREAM_SSL_KEYFILE=""))
    assert anonymous.exit_code == 4
    assert anonymous.output.strip().splitlines() == [
        f"error: the broker at {tls_broker} refused this client's TLS certificate (none was given): it asks for "
        "one signed by a CA it trusts (CLICKSTREAM_SSL_CERTFILE, CLICKSTREAM_SSL_KEYFILE)"]

    stranger = CliRunner().invoke(main, ["topics"], env=tls_env(certs, CLICKSTREAM_SSL_CERTFILE=str(certs / "mallory.crt"),
                                                                 CLICKSTREAM_SSL_KEYFILE=str(certs / "mallory.key")))
    assert stranger.exit_code == 4
    (line,) = stranger.output.strip().splitlines()
    assert line.startswith(f"error: the broker at {tls_broker} refused this client's TLS certificate (the one in ")


def test_the_worker_predicts_over_mutual_tls(tls_broker: str, certs: Path, worker_model: Path, tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings(broker=tls_broker, security_protocol="SSL", ssl_cafile=str(certs / "ca.pem"),
                 ssl_certfile=str(certs / "alice.crt"), ssl_keyfile=str(certs / "alice.key")),
        clicks_topic="tls-clicks", predictions_topic="tls-predictions", dead_letter_topic="tls-dead",
        demand_topic="tls-demand", audiences_topic="tls-audiences", app_id="tls-test", partitions=4)
    clicks = sample_clicks(300, "tls")
    worker = worker_for(settings, worker_model, tmp_path / "state")
    try:
        worker.start()
        ensure_topics(settings, [settings.clicks_topic])
        assert send_all(settings, settings.clicks_topic, [(c.key, CLICK.encode(c), None) for c in clicks]).failed == 0
        found = predictions_by_event(settings, (c.event_id for c in clicks), timeout_s=120)
    finally:
        worker.stop(signal.SIGTERM)
    assert set(found) == {c.event_id for c in clicks}
