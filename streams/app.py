"""The Faust app, built from the settings: ``faust -A streams.app worker -l info``.

Importing this module connects to nothing and loads no model; the worker checks the model artifact and the
topics when it starts, and the agent loads the predictor. The topics, the table and the agent register
themselves on ``app`` when Faust's autodiscovery imports ``streams.agents``: this module never imports them.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from core.errors import ConfigError
from core.log_throttle import throttle_repeats
from core.settings import load_settings

try:
    settings = load_settings()
except ConfigError as exc:  # one line, worded like the CLI's, instead of a traceback through Faust's loader
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None

class IntentApp(faust.App):
    """The Faust app, with the worker's checks before it joins the consumer group, and the agent's say before
    partitions are revoked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # awaited first when the group rebalances, before Faust revokes tables and streams (streams/agents.py:
        # the batches in flight are delivered and committed)
        self.before_revoke: list[Callable[[], Awaitable[None]]] = []

    async def on_first_start(self) -> None:
        check_before_joining()
        throttle_repeats()  # Faust has set up logging by now: a broker outage logs once per 10 s, with counts
        await super().on_first_start()

    async def _on_partitions_revoked(self, revoked: set[Any]) -> None:  # Faust's rebalance callback
        if not self.should_stop:
            for hook in self.before_revoke:
                await hook()
        await super()._on_partitions_revoked(revoked)


app = IntentApp(
    settings.app_id,
    broker=settings.faust_broker,
    broker_credentials=settings.faust_credentials(),
    store=settings.store,
    datadir=str(settings.worker_state_dir),  # a folder per app id (streams/state.py)
    autodiscover=["streams.agents", "streams.web"],
    web_bind=settings.web_bind,
    web_port=settings.web_port,
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


def check_before_joining() -> None:
    """A usable model, a reachable broker, every topic with agreeing partition counts, and a state folder built
    from this app's changelogs (streams/state.py).

    Problems end the worker with one clear line and the CLI's exit code. Run when the app service first starts
    (``faust -A streams.app worker``), not when the app is imported: ``faust -A streams.app --help``,
    ``agents`` or ``tables`` need neither a model nor a broker.
    """
    from core.errors import ClickstreamError
    from core.kafka import check_co_partitioned, ensure_topics
    from model.artifact import read_manifest
    from streams.state import check_owner

    try:
        read_manifest(settings.model_dir)
        ensure_topics(settings, [settings.clicks_topic, settings.rekeyed_topic, settings.demand_topic])
        ensure_topics(settings, settings.aging_topics, configs=settings.retention_configs())
        check_co_partitioned(settings, [settings.clicks_topic, settings.rekeyed_topic, settings.forget_topic,
                                        settings.changelog_topic, settings.forgotten_topic])
        check_owner(settings)
    except ClickstreamError as exc:
        # the worker has redirected sys.stderr into its log by now: write to the real stderr
        print(f"error: {exc}", file=sys.__stderr__, flush=True)
        os._exit(exc.exit_code)  # from inside the starting service: a SystemExit would be logged as a crash
