"""Forgetting a shopper: the requests of the forget topic and the records of the forgotten-users topic.

A request (``clickstream forget``, or any service) is a message on the forget topic keyed by the user id, as
the user's clicks are, so that it reaches the worker that holds the user's window. Its value is a JSON object,
``{"user_id": ..., "readmit": false, "requested_at_ms": ...}`` (all optional but the key; an empty value forgets).

The worker that handles it deletes the user's window and audience state and keeps a :class:`Forgotten` record
under the user's key on the compacted forgotten-users topic (the changelog of its ``user_forgotten`` table). The
rule: a forgotten user's events are dropped by the worker, ``replay`` and ``train --from-topic`` from then on,
whatever their event time. Only the operator readmits a user (``clickstream forget --readmit``): events from the
readmission on (event time) are kept again and start a new history; events from before it stay dropped, so a
replay of old logs never brings the forgotten history back.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from core.errors import DecodeError


@dataclasses.dataclass(frozen=True)
class ForgetRequest:
    """Forget a user (or, with ``readmit``, accept the user's events again from ``requested_at_ms`` on)."""

    user_id: str
    readmit: bool = False
    requested_at_ms: int | None = None

    @property
    def key(self) -> bytes:
        """The message key: the user id, as the user's clicks are keyed."""
        return self.user_id.encode()

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def parse(cls, key: bytes | None, value: bytes | None) -> ForgetRequest:
        """The request of a forget-topic message; DecodeError when it is not one."""
        if not key:
            raise DecodeError("a forget request must be keyed by its user id")
        try:
            user_id = key.decode()
            body: Any = json.loads(value) if value else {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"not a forget request (a JSON object): {exc}") from None
        if not isinstance(body, dict):
            raise DecodeError("not a forget request (a JSON object)")
        if body.get("user_id", user_id) != user_id:
            raise DecodeError(f"a forget request for user {body['user_id']!r} keyed by {user_id!r}")
        readmit, at = body.get("readmit", False), body.get("requested_at_ms")
        if not isinstance(readmit, bool) or not (at is None or isinstance(at, int)):
            raise DecodeError("a forget request's readmit is true or false and its requested_at_ms an integer")
        return cls(user_id, readmit, at)


@dataclasses.dataclass(frozen=True)
class Forgotten:
    """A forgotten user, as the forgotten-users topic keeps it."""

    forgotten_at_ms: int
    readmitted_at_ms: int | None = None

    def keeps(self, event_time_ms: int) -> bool:
        """Whether an event of this user is kept: only from a readmission on."""
        return self.readmitted_at_ms is not None and event_time_ms >= self.readmitted_at_ms

    def pack(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def unpack(cls, data: bytes) -> Forgotten:
        try:
            body = json.loads(data)
            return cls(int(body["forgotten_at_ms"]), body.get("readmitted_at_ms"))
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"not a forgotten-users record: {exc!r}") from None

    @staticmethod
    def after(previous: Forgotten | None, request: ForgetRequest, now_ms: int | None = None) -> Forgotten | None:
        """The record once ``request`` is applied (None: a readmission of a user who was never forgotten)."""
        at = request.requested_at_ms or (int(time.time() * 1000) if now_ms is None else now_ms)
        if not request.readmit:
            return Forgotten(at)
        if previous is None:
            return None
        return dataclasses.replace(previous, readmitted_at_ms=at)


def forgotten_users(records: Any) -> dict[bytes, Forgotten]:
    """The forgotten users of a read of the forgotten-users topic (``key``/``value`` records, oldest first): the
    newest record of each key wins, as compaction keeps it."""
    users: dict[bytes, Forgotten] = {}
    for record in records:
        if record.key is None:
            continue
        if record.value is None:
            users.pop(record.key, None)
        else:
            users[record.key] = Forgotten.unpack(record.value)
    return users


def read_forgotten(settings: Any) -> dict[bytes, Forgotten]:
    """The forgotten users as the forgotten-users topic holds them now (none when the topic does not exist)."""
    from core.kafka import partition_counts, read_to_end

    if settings.forgotten_topic not in partition_counts(settings, [settings.forgotten_topic]):
        return {}
    return forgotten_users(read_to_end(settings, settings.forgotten_topic))


class ForgottenFilter:
    """Keeps the events a forgotten-users read allows (:meth:`Forgotten.keeps`) and counts those it drops."""

    def __init__(self, forgotten: dict[bytes, Forgotten]) -> None:
        self.forgotten = forgotten
        self.dropped = 0

    def keeps(self, key: bytes, event_time_ms: int) -> bool:
        record = self.forgotten.get(key)
        if record is None or record.keeps(event_time_ms):
            return True
        self.dropped += 1
        return False
