"""Topics and the window and forgotten-users tables of the worker (all keyed by raw user id bytes, values raw
bytes)."""
from __future__ import annotations

from streams.app import app, settings

_raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw",
        "partitions": settings.partitions}
# The worker creates missing topics with the configured partitions when it starts (streams.app).
rekeyed_clicks_topic = app.topic(settings.rekeyed_topic, **_raw)
predictions_topic = app.topic(settings.predictions_topic, **_raw)
dead_letter_topic = app.topic(settings.dead_letter_topic, **_raw)
forget_topic = app.topic(settings.forget_topic, **_raw)  # forget requests (core/privacy.py)
# What the agent reads: clicks, the clicks that arrived without their user id as key (see agents.py), and forget
# requests (core/privacy.py), keyed by user id like clicks, so that a request reaches the user's window.
# acks=False: Faust's consumer never commits them; the worker commits what it handled (streams/ledger.py).
click_sources = app.topic(settings.clicks_topic, rekeyed_clicks_topic.get_topic_name(), forget_topic.get_topic_name(),
                          acks=False, **_raw)

# use_partitioner: a user's changelog record goes to the partition of the user's clicks (same key, same
# murmur2 partitioner), so a partition's windows move with it on a rebalance, and expiry may delete keys
# outside of stream iteration.
user_to_window = app.Table(
    "user_to_window", default=None, use_partitioner=True, partitions=settings.partitions,
    key_type=bytes, value_type=bytes,  # bytes -> Faust's "raw" serializer in the store and the changelog
    options={"driver": "rocksdict"}, extra_topic_configs=settings.changelog_configs(),
)

# The forgotten users (core/privacy.py), partitioned like the windows; its changelog is the forgotten-users topic,
# named without the app id: the list outlives an app id, and replay and `train --from-topic` read it too.
user_forgotten = app.Table(
    "user_forgotten", default=None, use_partitioner=True, partitions=settings.partitions,
    key_type=bytes, value_type=bytes, options={"driver": "rocksdict"},
    changelog_topic=app.topic(settings.forgotten_topic, compacting=True, internal=True, acks=False, maxsize=131_072,
                              allow_empty=True, **_raw),
)
