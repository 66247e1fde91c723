from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, load_settings


def test_defaults_then_yaml_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("broker: kafka://10.0.0.1:9092\nbatch_max: 20\nclicks_topic: yaml-clicks\n")
    env = {"CLICKSTREAM_BATCH_MAX": "30", "CLICKSTREAM_CONFIG": str(config)}
    s = load_settings(env=env)
    assert s.batch_max == 30  # environment beats the file
    assert s.clicks_topic == "yaml-clicks"  # file beats the default
    assert s.predictions_topic == "predictions"  # default
    assert s.bootstrap_servers == ["10.0.0.1:9092"]
    assert s.faust_broker == "kafka://10.0.0.1:9092"
    assert load_settings(env=env, batch_max=40).batch_max == 40  # explicit overrides win


def test_bad_values_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_max must be int"):
        load_settings(env={"CLICKSTREAM_BATCH_MAX": "fifty"})
    with pytest.raises(ConfigError, match="batch_max must be at least 1"):
        load_settings(env={"CLICKSTREAM_BATCH_MAX": "0"})
    with pytest.raises(ConfigError, match="security_protocol must be one of"):
        load_settings(env={"CLICKSTREAM_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", env={})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("windw_length: 3\n")
    with pytest.raises(ConfigError, match="unknown settings windw_length"):
        load_settings(unknown, env={})


def test_sasl_scram_passes_to_both_clients_and_hides_the_password() -> None:
    env = {"CLICKSTREAM_SECURITY_PROTOCOL": "SASL_SSL", "CLICKSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
           "CLICKSTREAM_SASL_USERNAME": "alice", "CLICKSTREAM_SASL_PASSWORD": "s3cret",
           "CLICKSTREAM_BROKER": "b1:9093,b2:9093"}
    s = load_settings(env=env)
    assert "s3cret" not in repr(s)
    kp = s.kafka_python_config()
    assert kp["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert (kp["security_protocol"], kp["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (kp["sasl_plain_username"], kp["sasl_plain_password"]) == ("alice", "s3cret")
    creds = s.faust_credentials()
    assert (creds.username, creds.password, creds.mechanism.value) == ("alice", "s3cret", "SCRAM-SHA-512")
    assert creds.ssl_context is not None
    with pytest.raises(ConfigError, match="needs sasl_mechanism"):
        load_settings(env={"CLICKSTREAM_SECURITY_PROTOCOL": "SASL_SSL"})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.batch_max = 3  # type: ignore[misc]


def test_to_env_reproduces_the_settings() -> None:
    s = Settings(broker="b:1", app_id="x", predictor_batch_sizes=(8, 64), schema_id_click=3, state_dir="/s")
    assert load_settings(env=s.to_env()) == s


def test_explain_predictions_is_a_switch_off_by_default(tmp_path: Path) -> None:
    assert Settings().explain_predictions is False
    assert load_settings(env={"CLICKSTREAM_EXPLAIN_PREDICTIONS": "true"}).explain_predictions is True
    assert load_settings(env={"CLICKSTREAM_EXPLAIN_PREDICTIONS": "0"}).explain_predictions is False
    config = tmp_path / "settings.yaml"
    config.write_text("explain_predictions: yes\n")  # YAML's own boolean
    assert load_settings(config, env={}).explain_predictions is True
    with pytest.raises(ConfigError, match="explain_predictions must be true or false, got 'maybe'"):
        load_settings(env={"CLICKSTREAM_EXPLAIN_PREDICTIONS": "maybe"})
    s = Settings(explain_predictions=True)
    assert load_settings(env=s.to_env()) == s


def test_demand_and_audience_settings() -> None:
    s = load_settings(env={"CLICKSTREAM_DEMAND": "0", "CLICKSTREAM_AUDIENCE": "true",
                           "CLICKSTREAM_DEMAND_WINDOWS_S": "60,300", "CLICKSTREAM_AUDIENCE_THRESHOLD": "0.7"})
    assert (s.demand, s.audience, s.demand_windows_s, s.audience_threshold) == (False, True, (60, 300), 0.7)
    assert load_settings(env=s.to_env()) == s  # what a worker process inherits
    with pytest.raises(ConfigError, match="audience thresholds"):
        load_settings(env={"CLICKSTREAM_AUDIENCE_REARM_THRESHOLD": "0.9"})
    with pytest.raises(ConfigError, match="demand must be true or false"):
        load_settings(env={"CLICKSTREAM_DEMAND": "maybe"})
    with pytest.raises(ConfigError, match="demand_windows_s must be positive"):
        Settings(demand_windows_s=())
    with pytest.raises(ConfigError, match="audience_threshold must be float"):
        load_settings(env={"CLICKSTREAM_AUDIENCE_THRESHOLD": "high"})
