from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli.main import main


@pytest.mark.parametrize("command", ["produce", "subscribe", "topics", "replay", "train", "evaluate", "explain", "intent",
                                     "demand", "audience"])
def test_help_shows_an_environment_variable_for_every_option(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    cmd = main.commands[command]
    options = [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]
    assert options
    for option in options:
        assert option.envvar and option.envvar.startswith("CLICKSTREAM_"), option.name
        assert f"env var: {option.envvar}" in result.output, option.name
        assert option.help, f"--{option.name} has no help text"


def test_unreachable_broker_is_one_line_and_exit_code_4() -> None:
    result = CliRunner().invoke(main, ["produce", "--synthetic", "--events", "5", "--broker", "127.0.0.1:1"])
    assert result.exit_code == 4
    assert result.output.strip().splitlines() == [
        "error: no Kafka broker answered at 127.0.0.1:1 (start one with `make kafka-up`, or set CLICKSTREAM_BROKER)"]


def test_usage_errors_do_not_reach_the_broker() -> None:
    result = CliRunner().invoke(main, ["produce"])
    assert result.exit_code == 2 and "give log files or --synthetic" in result.output
    result = CliRunner().invoke(main, ["produce", "--synthetic", "--rate", "-1"])
    assert result.exit_code == 2 and "--rate must be >= 0" in result.output


def test_faust_commands_need_neither_a_model_nor_a_broker(tmp_path: object) -> None:
    import os
    import subprocess

    from benchmarks.worker_process import FAUST, REPO

    env = {**os.environ, "CLICKSTREAM_MODEL_DIR": "/nonexistent", "CLICKSTREAM_BROKER": "127.0.0.1:1"}
    for args in (["--help"], ["worker", "--help"], ["tables"]):
        done = subprocess.run([FAUST, "-A", "streams.app", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "user_to_window" in done.stdout


def test_no_worker_is_one_line() -> None:
    result = CliRunner().invoke(main, ["intent", "alice", "--worker-url", "http://127.0.0.1:1"])
    assert result.exit_code == 4
    assert result.output.startswith("error: no worker answered at http://127.0.0.1:1")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    ([], "give LOGS or --from-topic TOPIC"),
    (["--since", "7d"], "select a time range of --from-topic"),
    (["--from-topic", "clicks", "--since", "7d", "--from-time", "2017-11-25"], "not both"),
    (["--from-topic", "clicks", "--since", "a week"], "is not a time"),
])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_the_events_come_from_logs_or_a_topic_and_a_bad_choice_is_a_usage_error(command: str, args: list[str],
                                                                           message: str) -> None:
    result = CliRunner().invoke(main, [command, *args, "--broker", "127.0.0.1:1"])
    assert result.exit_code == 2 and "Error: " in result.output and message in result.output  # before any broker


def test_training_from_an_unreachable_broker_is_one_line() -> None:
    result = CliRunner().invoke(main, ["train", "--from-topic", "clicks", "--broker", "127.0.0.1:1"])
    assert result.exit_code == 4 and result.output.strip().splitlines() == [
        "error: no Kafka broker answered at 127.0.0.1:1 (start one with `make kafka-up`, or set CLICKSTREAM_BROKER)"]


def test_times_are_iso_epoch_milliseconds_or_a_duration_before_now() -> None:
    from cli.topic_clicks import parse_time

    now = 1_700_000_000_000
    assert parse_time("7d", now) == now - 7 * 86_400_000
    assert parse_time("90m", now) == now - 90 * 60_000
    assert parse_time("1.5h", now) == now - 5_400_000
    assert parse_time("1511740800000", now) == 1_511_740_800_000
    assert parse_time("2017-11-27", now) == 1_511_740_800_000  # UTC unless it says otherwise
    assert parse_time("2017-11-27T01:00+01:00", now) == 1_511_740_800_000
