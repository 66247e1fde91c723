"""The Faust app, built from the settings: ``faust -A streams.app worker -l info``.

Importing this module connects to nothing and loads no model; the worker checks the model artifact when it
initialises and the agent loads the predictor when it starts. The topics, the table and the agent register
themselves on ``app`` when Faust's autodiscovery imports ``streams.agents``: this module never imports them.
"""
from __future__ import annotations

import sys

import faust

from core.errors import ConfigError
from core.settings import load_settings

try:
    settings = load_settings()
except ConfigError as exc:  # one line, worded like the CLI's, instead of a traceback through Faust's loader
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None

app = faust.App(
    settings.app_id,
    broker=settings.faust_broker,
    broker_credentials=settings.faust_credentials(),
    store=settings.store,
    datadir=settings.state_dir,
    autodiscover=["streams.agents"],
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    processing_guarantee="at_least_once",
    producer_acks=-1,
    producer_linger_ms=5,
    producer_max_batch_size=512 * 1024,
    stream_buffer_maxsize=max(4096, 4 * settings.batch_max),
    broker_max_poll_records=max(1000, settings.batch_max),
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    # a worker killed with -9 holds its partitions until the session times out (Faust's default: 60 s)
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 3),
    consumer_group_instance_id=settings.group_instance_id,
)


@app.on_worker_init.connect
def prepare_worker(sender: faust.App, **kwargs: object) -> None:
    """Before joining the group: a usable model, a reachable broker, and every topic with its partitions.

    Problems end the worker with one clear line and the CLI's exit code.
    """
    from core.errors import ClickstreamError
    from core.kafka import check_co_partitioned, ensure_topics
    from model.artifact import read_manifest

    try:
        read_manifest(settings.model_dir)
        ensure_topics(settings, [settings.clicks_topic, settings.rekeyed_topic, settings.predictions_topic,
                                 settings.dead_letter_topic])
        check_co_partitioned(settings, [settings.clicks_topic, settings.rekeyed_topic, settings.changelog_topic])
    except ClickstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None

