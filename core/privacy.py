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
import hashlib
import hmac
import json
from typing import Any

from core.errors import DecodeError

PSEUDONYM_PREFIX = "p1:"  # and 32 hex digits: the first 128 bits of HMAC-SHA256(key, user id)


class UserIds:
    """How users are keyed: by the incoming id, or, with a secret key (``CLICKSTREAM_USER_ID_KEY``), by a pseudonym,
    the keyed hash HMAC-SHA256(key, id), so that nothing the worker stores or sends holds the raw id.

    The pseudonym is taken where a raw id enters (a click of the clicks topic, a forget request, a web query, a
    CLI argument); a message keyed by the raw id then goes round through the topic of its pseudonym's partition
    (clicks through the rekeyed topic, requests through the forget topic).
    """

    def __init__(self, secret: str | None) -> None:
        self._key = secret.encode() if secret else None

    @property
    def pseudonymous(self) -> bool:
        return self._key is not None

    def key_of(self, user_id: str) -> str:
        """The id the worker keys this user by: the pseudonym, or the id itself without a key."""
        if self._key is None:
            return user_id
        return PSEUDONYM_PREFIX + hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:  # never the key
        return f"UserIds(pseudonymous={self.pseudonymous})"


@dataclasses.dataclass(frozen=True)
class ForgetRequest:
    """Forget a user (or, with ``readmit``, accept the user's events again from ``requested_at_ms`` on)."""

    user_id: str
    readmit: bool = False
    requested_at_ms: int | None = None
    pseudonymous: bool = False  # user_id is a pseudonym already (the worker sent it round, see UserIds)

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
        readmit, at, pseudonymous = body.get("readmit", False), body.get("requested_at_ms"), body.get("pseudonymous",
                                                                                                     False)
        if not isinstance(readmit, bool) or not isinstance(pseudonymous, bool) or not (at is None or isinstance(at, int)):
            raise DecodeError("a forget request's readmit and pseudonymous are true or false and its requested_at_ms "
                              "an integer")
        return cls(user_id, readmit, at, pseudonymous)


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
    def after(previous: Forgotten | None, request: ForgetRequest, now_ms: int) -> Forgotten | None:
        """The record once ``request`` is applied, at ``now_ms`` unless the request says when (None: a readmission
        of a user who was never forgotten)."""
        at = request.requested_at_ms or now_ms
        if not request.readmit:
            return Forgotten(at)
        if previous is None:
            return None
        # never before the forgetting: a request dated earlier would bring part of the forgotten history back
        return dataclasses.replace(previous, readmitted_at_ms=max(at, previous.forgotten_at_ms))


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
    """Keeps the events a forgotten-users read allows (:meth:`Forgotten.keeps`) and counts those it drops; users
    are looked up by ``user_ids``' key of their id."""

    def __init__(self, forgotten: dict[bytes, Forgotten], user_ids: UserIds | None = None) -> None:
        self.forgotten = forgotten
        self.user_ids = user_ids or UserIds(None)
        self.dropped = 0

    @classmethod
    def read(cls, settings: Any) -> ForgottenFilter:
        """The filter of the forgotten-users topic as it is now, under these settings' user ids."""
        return cls(read_forgotten(settings), settings.user_ids())

    def keeps(self, user_id: str, event_time_ms: int) -> bool:
        record = self.forgotten.get(self.user_ids.key_of(user_id).encode()) if self.forgotten else None
        if record is None or record.keeps(event_time_ms):
            return True
        self.dropped += 1
        return False
