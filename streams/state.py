"""Whose the worker's state folder is: RocksDB tables are only ever used with the changelogs they were built from.

Faust keeps each table partition's changelog offset in its RocksDB store. A store read against another
changelog (the broker was reset, the topic deleted and created again) either stops the worker with Faust's
``ConsistencyError`` traceback, when the store is ahead of the new changelog, or, worse, serves old windows
without a word. The folder is per app id (``Settings.worker_state_dir``), and ``owner.json`` in it records the
Kafka cluster id and the changelog topics' ids; a folder that belongs to another cluster or changelog is refused
in one line before Faust opens it.
"""
from __future__ import annotations

import json
from typing import Any

from core.errors import ConfigError
from core.kafka import admin
from core.settings import Settings

OWNER = "owner.json"


def check_owner(settings: Settings) -> None:
    """Refuse (ConfigError) a state folder built against another cluster or changelog; record this one's."""
    folder = settings.worker_state_dir
    path = folder / OWNER
    current = describe(settings)
    if path.is_file():
        mismatch = mismatches(json.loads(path.read_text()), current)
        if mismatch:
            raise ConfigError(f"the worker state at {folder} was built from {mismatch}; it is never used against "
                              f"another changelog: delete that folder (the worker rebuilds it from the changelog) or "
                              f"set CLICKSTREAM_STATE_DIR")
    elif folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"the worker state at {folder} has no {OWNER}: it was not made by this worker for app "
                          f"{settings.app_id!r}; delete that folder or set CLICKSTREAM_STATE_DIR")
    record_owner(settings, current)


def record_owner(settings: Settings, current: dict[str, Any] | None = None) -> None:
    """Write owner.json with what the broker says now, keeping the topic ids recorded before (the agent calls
    this again once Faust has created the changelogs at a first start)."""
    folder = settings.worker_state_dir
    path = folder / OWNER
    current = current or describe(settings)
    known = json.loads(path.read_text()) if path.is_file() else {}
    current = {**current, "topics": {**known.get("topics", {}), **current["topics"]}}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
    tmp.replace(path)


def describe(settings: Settings) -> dict[str, Any]:
    """The app id, the cluster id and the ids of the changelog topics that exist (Faust creates them at the
    first start, after the check: the agent records their ids once it serves)."""
    client = admin(settings)
    try:
        cluster = client.describe_cluster()["cluster_id"]
        existing = set(client.list_topics())
        names = [t for t in settings.changelog_topics if t in existing]
        topics = {t["name"]: t.get("topic_id") for t in client.describe_topics(names)} if names else {}
    finally:
        client.close()
    return {"app_id": settings.app_id, "cluster_id": cluster, "topics": topics}


def mismatches(known: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between the recorded owner and the broker now, in words (None: nothing)."""
    if known.get("app_id") != current["app_id"]:
        return f"app {known.get('app_id')!r}, not {current['app_id']!r}"
    if known.get("cluster_id") != current["cluster_id"]:
        return f"Kafka cluster {known.get('cluster_id')}, not this broker's {current['cluster_id']}"
    for name, topic_id in known.get("topics", {}).items():
        now = current["topics"].get(name)
        if now is None:
            return f"changelog {name}, which does not exist any more"
        if topic_id and now != topic_id:
            return f"an earlier changelog {name} (topic id {topic_id}, now {now})"
    return None

