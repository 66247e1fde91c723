"""One typed, frozen settings object: defaults, then a YAML file, then ``CLICKSTREAM_*`` variables.

Every field ``name`` can be set in the YAML file under the key ``name`` and by the environment variable
``CLICKSTREAM_<NAME>`` (upper case), which wins. The YAML file is ``--config`` on the CLI or
``CLICKSTREAM_CONFIG``.

=========================  =====================================================================
variable                   meaning
=========================  =====================================================================
CLICKSTREAM_BROKER         bootstrap servers, ``host:port[,host:port]`` (``kafka://`` prefix allowed)
CLICKSTREAM_CLICKS_TOPIC   topic of raw clicks (``clicks``)
CLICKSTREAM_PREDICTIONS_TOPIC   topic of predictions (``predictions``)
CLICKSTREAM_DEAD_LETTER_TOPIC   topic of clicks that could not be processed (``clicks-dead-letter``)
CLICKSTREAM_PARTITIONS     partitions of the topics ``clickstream topics`` creates (4)
CLICKSTREAM_REPLICATION_FACTOR  replication factor of those topics (1)
CLICKSTREAM_APP_ID         Faust app id = consumer group and table changelog prefix
CLICKSTREAM_WINDOW_TTL_S   users idle longer than this lose their window (7 days)
CLICKSTREAM_EXPIRY_INTERVAL_S  a pass over the stored windows, deleting idle users', starts at most this often
                           (60); it reads a slice of them after each micro-batch, never all at once
CLICKSTREAM_BATCH_MAX      most clicks per micro-batch (512)
CLICKSTREAM_BATCH_WITHIN_MS  longest wait to fill a micro-batch (20)
CLICKSTREAM_TOP_K          categories per prediction (10)
CLICKSTREAM_MODEL_DIR      trained model artifact folder (``artifacts/model``); the worker keeps the N
                           events per user that the model's manifest names
CLICKSTREAM_RUNTIME        what computes the network: ``numpy`` (the default; the artifact's serving.npz, no
                           TensorFlow in the worker) or ``tensorflow`` (the Keras network compiled per shape)
CLICKSTREAM_INFERENCE_THREADS  threads of the predictor's numeric library: BLAS for numpy, intra-op for
                           tensorflow (1: an idle OpenBLAS thread spins, costing more CPU than it saves)
CLICKSTREAM_PREDICTOR_BATCH_SIZES  the tensorflow runtime's batch shapes, compiled at start (``8,64,512``);
                           the largest is also the most windows per predictor call in both runtimes (numpy:
                           at most 256, where its cost per window is lowest)
CLICKSTREAM_PREDICTOR_LENGTHS  window-length groups besides the model's N (``16``): a call predicts each
                           group apart, so short windows never pay for long ones
CLICKSTREAM_PREDICTOR_WARM  the tensorflow runtime: ``first`` serves once one shape is compiled, ``all``
                           compiles every shape first
CLICKSTREAM_EXPLAIN_PREDICTIONS  each prediction carries the window events that drove its top category
                           (``drivers``: the pointer's attention); ``false`` by default, it costs some
                           throughput (``python -m benchmarks predictor --drivers``)
CLICKSTREAM_INFERENCE_PROCESS  the inference engine (decoding, windows, inference, encoding, demand and
                           audiences) runs in a child process beside the event loop's, one batch in flight
                           while the next is read (``true`` by default: more clicks/s on two or more cores);
                           ``false`` runs the same engine in a thread: less memory, for a worker with one core
CLICKSTREAM_PREDICTOR_FACTORY  ``module:callable`` that builds the predictor, called like
                           ``model.predictor:Predictor`` (the default); for a wrapped predictor, and for tests
                           that inject faults in either inference mode
CLICKSTREAM_MODEL_POLL_S   how often the worker looks for a new model version at MODEL_DIR (30; 0: never)
CLICKSTREAM_WEB_BIND       address the worker's web server listens on (``127.0.0.1``; ``0.0.0.0`` in a pod)
CLICKSTREAM_WEB_PORT       its port (6066): /metrics, /live, /ready, /users/{id}/intent
CLICKSTREAM_SESSION_TIMEOUT_S  a worker that died leaves the consumer group after this long (10)
CLICKSTREAM_STALL_TIMEOUT_S  a worker whose committed offset stays behind, unmoved, this long dumps its tasks and
                           exits 75, for its supervisor to restart it (60; 0: never)
CLICKSTREAM_GROUP_INSTANCE_ID  static group membership, a stable id per worker (not recommended: in the
                           restart benchmark a second restart with the same id never got its partitions back)
CLICKSTREAM_STORE          Faust table store (``rocksdb://``)
CLICKSTREAM_STATE_DIR      worker state folder: RocksDB tables under ``<state dir>/<app id>/`` (``.state/worker``)
CLICKSTREAM_WIRE_FORMAT    how clicks and predictions are written: bare Avro or Avro single-object encoding
                           (``bare``); all formats are read
CLICKSTREAM_SCHEMA_DIR     extra .avsc files of producers' schema versions, for single-object reads
CLICKSTREAM_SCHEMA_ID_CLICK / _PREDICTION  set to use the Confluent wire format with these schema ids
CLICKSTREAM_SECURITY_PROTOCOL  PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
CLICKSTREAM_SASL_MECHANISM  PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
CLICKSTREAM_SASL_USERNAME / CLICKSTREAM_SASL_PASSWORD   SASL credentials (the password is never printed)
CLICKSTREAM_SSL_CAFILE     CA bundle that signs the brokers' certificates
CLICKSTREAM_SSL_CERTFILE / CLICKSTREAM_SSL_KEYFILE  client certificate and key (PEM) for mutual TLS
CLICKSTREAM_DEMAND         1: the worker aggregates category demand (``true``; 0/false turns it off)
CLICKSTREAM_DEMAND_TOPIC   topic of closed demand windows (``category-demand``)
CLICKSTREAM_DEMAND_WINDOWS_S  tumbling event-time window sizes in seconds (``60,3600``)
CLICKSTREAM_DEMAND_GRACE_S  a window closes this long (event time) after its end; later clicks are late (10)
CLICKSTREAM_AUDIENCE       1: the worker gates users into marketing audiences (``true``; 0/false: off)
CLICKSTREAM_AUDIENCES_TOPIC  topic of audience entries (``audiences``)
CLICKSTREAM_AUDIENCE_THRESHOLD  a user enters when purchase probability >= this (0.3)
CLICKSTREAM_AUDIENCE_REARM_THRESHOLD  and may enter again only after it fell below this (0.1)
CLICKSTREAM_AUDIENCE_SESSION_GAP_S  clicks without a session id: an event-time gap this long starts a new
                           session (1800)
CLICKSTREAM_FORGET_TOPIC   topic of forget requests, keyed by user id (``forget``; ``clickstream forget``)
CLICKSTREAM_FORGOTTEN_TOPIC  compacted topic of the forgotten users (``forgotten-users``)
CLICKSTREAM_RETENTION_DAYS  what the worker derives about a user is gone this long after it was written or the user
                           forgotten: the retention of the predictions, audiences, dead-letter and forget topics
                           the worker or ``clickstream topics`` creates, and the longest a deleted window or
                           audience state waits for compaction in their changelogs (7; 0: the broker's defaults)
CLICKSTREAM_USER_ID_KEY    a secret: the worker and the CLI key users by HMAC-SHA256(secret, user id) instead of
                           the id (pseudonymous ids; see the README's Privacy section; never printed)
=========================  =====================================================================
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from core.errors import ConfigError

ENV_PREFIX = "CLICKSTREAM_"
DEFAULT_MODEL_DIR = "artifacts/model"
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
WireFormat = Literal["bare", "single-object"]
PredictorWarm = Literal["first", "all"]
Runtime = Literal["numpy", "tensorflow"]
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the CLI, the worker and the benchmarks need to know about their environment."""

    broker: str = "127.0.0.1:9092"
    clicks_topic: str = "clicks"
    predictions_topic: str = "predictions"
    dead_letter_topic: str = "clicks-dead-letter"
    partitions: int = 4
    replication_factor: int = 1
    app_id: str = "clickstream-intent"
    window_ttl_s: int = 7 * 24 * 3600
    expiry_interval_s: int = 60
    batch_max: int = 512
    batch_within_ms: int = 20
    top_k: int = 10
    model_dir: str = DEFAULT_MODEL_DIR
    # threads of the inference engine's numeric library: BLAS (numpy runtime), intra-op (tensorflow runtime)
    inference_threads: int = 1
    predictor_batch_sizes: tuple[int, ...] = (8, 64, 512)
    predictor_lengths: tuple[int, ...] = (16,)
    # what computes the network: "numpy" (the artifact's serving.npz, no TensorFlow in the worker) or
    # "tensorflow" (the Keras network compiled per shape)
    runtime: Runtime = "numpy"
    # the tensorflow runtime: "first" serves once the one shape every batch fits is compiled, compiles the rest
    # beside the first batches (faster restarts); "all" compiles every shape before serving
    predictor_warm: PredictorWarm = "first"
    explain_predictions: bool = False
    # the inference engine in a child process (true) or in a thread of the worker's (false)
    inference_process: bool = True
    predictor_factory: str = "model.predictor:Predictor"
    session_timeout_s: int = 10
    # a worker whose committed offset on a partition stays behind the end, unmoved, this long dumps its tasks and
    # exits (code 75) for its supervisor to restart it; 0: never
    stall_timeout_s: int = 60
    model_poll_s: int = 30
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    group_instance_id: str | None = None
    store: str = "rocksdb://"
    state_dir: str = ".state/worker"
    wire_format: WireFormat = "bare"
    schema_dir: str | None = None
    schema_id_click: int | None = None
    schema_id_prediction: int | None = None
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    demand: bool = True
    demand_topic: str = "category-demand"
    demand_windows_s: tuple[int, ...] = (60, 3600)
    demand_grace_s: int = 10
    audience: bool = True
    audiences_topic: str = "audiences"
    audience_threshold: float = 0.3
    audience_rearm_threshold: float = 0.1
    audience_session_gap_s: int = 1800
    forget_topic: str = "forget"
    forgotten_topic: str = "forgotten-users"
    retention_days: float = 7.0
    user_id_key: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("partitions", "replication_factor", "batch_max", "top_k", "inference_threads",
                     "window_ttl_s", "expiry_interval_s", "session_timeout_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("mutual TLS needs both ssl_certfile and ssl_keyfile")
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password
                                                               and self.sasl_mechanism):
            raise ConfigError(f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password")
        if not self.demand_windows_s or min(self.demand_windows_s) < 1:
            raise ConfigError(f"demand_windows_s must be positive window sizes in seconds, got {self.demand_windows_s}")
        if self.retention_days < 0:
            raise ConfigError(f"retention_days must be >= 0, got {self.retention_days}")
        if self.demand_grace_s < 0 or self.audience_session_gap_s < 1:
            raise ConfigError("demand_grace_s must be >= 0 and audience_session_gap_s >= 1")
        if not 0.0 <= self.audience_rearm_threshold <= self.audience_threshold <= 1.0:
            raise ConfigError("audience thresholds must satisfy 0 <= audience_rearm_threshold <= audience_threshold "
                              f"<= 1, got {self.audience_rearm_threshold} and {self.audience_threshold}")

    def user_ids(self) -> Any:
        """How users are keyed under these settings (core.privacy.UserIds)."""
        from core.privacy import UserIds

        return UserIds(self.user_id_key)

    def retention_configs(self) -> dict[str, str]:
        """Topic settings of the topics that age out (``retention_days``)."""
        return self._days_config("retention.ms")

    def changelog_configs(self) -> dict[str, str]:
        """Topic settings of the changelogs holding users' state: a deleted value is compacted away in time."""
        return self._days_config("max.compaction.lag.ms")

    def _days_config(self, name: str) -> dict[str, str]:
        """The topic setting ``name`` at ``retention_days`` in milliseconds (none at 0: the broker's default)."""
        return {name: str(int(self.retention_days * 86_400_000))} if self.retention_days else {}

    def codec_options(self) -> dict[str, Any]:
        """How :class:`schemas.codec.RecordCodec` writes and reads messages under these settings."""
        return {"single_object": self.wire_format == "single-object", "schema_dir": self.schema_dir}

    @property
    def rekeyed_topic(self) -> str:
        """Internal topic of clicks that arrived without their user id as key (co-partitioned with clicks)."""
        return f"{self.app_id}-clicks-rekeyed"

    @property
    def aging_topics(self) -> list[str]:
        """Topics that hold what users did or what the worker derived of them, and age out (``retention_days``)."""
        return [self.predictions_topic, self.dead_letter_topic, self.audiences_topic, self.forget_topic]

    @property
    def worker_state_dir(self) -> Path:
        """The worker's RocksDB tables: a folder per app id, so that another app id never reads them."""
        return Path(self.state_dir) / self.app_id

    @property
    def changelog_topics(self) -> list[str]:
        """Changelogs of every table of the worker (windows, audience gates, forgotten users)."""
        return [self.changelog_topic, f"{self.app_id}-user_to_audience-changelog", self.forgotten_topic]

    @property
    def changelog_topic(self) -> str:
        """Changelog of the worker's window table (Faust names it after the app id and the table)."""
        return f"{self.app_id}-user_to_window-changelog"

    def to_env(self) -> dict[str, str]:
        """``CLICKSTREAM_*`` variables that reproduce these settings in another process (a worker)."""
        env = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                env[ENV_PREFIX + field.name.upper()] = (",".join(map(str, value)) if isinstance(value, tuple)
                                                        else str(value))
        return env

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` entries without any ``kafka://`` scheme."""
        return [s.strip().removeprefix("kafka://") for s in self.broker.split(",") if s.strip()]

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{s}" for s in self.bootstrap_servers)

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection and security options for kafka-python clients."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            config.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        if self.ssl_cafile:
            config["ssl_cafile"] = self.ssl_cafile
        if self.ssl_certfile:
            config.update(ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile)
        return config

    def ssl_context(self) -> Any:
        """The TLS context for SSL / SASL_SSL (trusting ``ssl_cafile`` when given), else None."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        import ssl

        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:  # mutual TLS: the broker checks this client's certificate too
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def aiokafka_config(self) -> dict[str, Any]:
        """Connection and security options for aiokafka clients (Faust's own client)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.security_protocol.startswith("SASL"):
            config.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        return config

    def faust_credentials(self) -> Any:
        """The same security options as a Faust credentials object (None for PLAINTEXT)."""
        import faust

        if self.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        if self.security_protocol.startswith("SASL"):
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         mechanism=self.sasl_mechanism, ssl_context=self.ssl_context())
        return None


def _field_types() -> dict[str, Any]:
    return get_type_hints(Settings)


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    """Turn a YAML or environment value into the field's type, or raise one clear ConfigError."""
    args = [a for a in get_args(hint) if a is not type(None)]
    optional = type(None) in get_args(hint)
    if raw is None or (isinstance(raw, str) and raw == "" and optional):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    if getattr(hint, "__origin__", None) is tuple:
        try:
            values = tuple(int(v) for v in (raw.split(",") if isinstance(raw, str) else raw) if str(v).strip())
        except (TypeError, ValueError):
            values = ()
        if not values or min(values) < 1:
            raise ConfigError(f"{name} must be comma-separated positive integers, got {raw!r}")
        return values
    literal_choices: tuple[Any, ...] = ()
    base = hint
    if args and getattr(hint, "__origin__", None) is Literal:
        literal_choices = get_args(hint)
    elif args:
        base = args[0]
        if getattr(base, "__origin__", None) is Literal:
            literal_choices = get_args(base)
    if literal_choices:
        value = str(raw)
        if value not in literal_choices:
            raise ConfigError(f"{name} must be one of {', '.join(literal_choices)}, got {value!r}")
        return value
    if base is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    try:
        if base is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if base is int:
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if base is str:
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {base.__name__}, got {raw!r}") from None
    raise ConfigError(f"{name}: unsupported type {hint}")  # pragma: no cover - only if a field is added badly


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then the YAML file (argument or CLICKSTREAM_CONFIG), then the environment, then overrides."""
    env = os.environ if env is None else env
    hints = _field_types()
    values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"settings file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"settings file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"settings file {path} must hold a mapping of setting names to values")
        unknown = sorted(set(loaded) - set(hints))
        if unknown:
            raise ConfigError(f"settings file {path}: unknown settings {', '.join(unknown)}")
        values.update(loaded)
    for name in hints:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**{name: _coerce(name, raw, hints[name]) for name, raw in values.items()})
