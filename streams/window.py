"""A user's window of recent events, packed into compact bytes for the ``user_to_window`` table.

Layout (little-endian): version (B), event count n (B), flags (B), base time ms (q), then n time deltas
(I, ms after the base; q absolute times when the window spans more than 49 days), n event type codes (b),
n event-id checksums (I, crc32: a re-delivered event is recognised), n category slots (B) into the distinct
raw category ids that follow, each as a 2-byte length and its UTF-8 bytes (format 2; format 1 joined them
with 0x1f, which an id containing that character broke; windows of format 1 still read). A 50-event window
takes 562 bytes with 6 distinct categories (7-digit ids), 960 bytes with 50.
Raw category ids are kept, so a new model version can use old windows. Event types are stored by their
stable codes (``core.events``), never by a position in some list.
"""
from __future__ import annotations

import bisect
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from core.errors import DecodeError
from core.events import event_type_code
from model.window import Window

VERSION = 2
READS = (1, 2)
MAX_EVENTS = 255
_HEADER = struct.Struct("<BBBq")
_LENGTH = struct.Struct("<H")
_WIDE_TIMES = 1
_V1_SEP = "\x1f"


def event_checksum(event_id: str) -> int:
    return zlib.crc32(event_id.encode())


@dataclass
class UserWindow:
    """The newest events of one user, oldest first (plain lists: cheap to edit one event at a time)."""

    times_ms: list[int]
    event_types: list[int]
    checksums: list[int]
    categories: list[str]

    @classmethod
    def empty(cls) -> UserWindow:
        return cls([], [], [], [])

    def __len__(self) -> int:
        return len(self.times_ms)

    @property
    def newest_ms(self) -> int:
        return self.times_ms[-1] if self.times_ms else 0

    def add(self, event_id: str, category: str, event_type: str, time_ms: int, max_events: int) -> bool:
        """Place an event by event time (after equal times); False if it is already in the window."""
        checksum = event_checksum(event_id)
        if checksum in self.checksums:
            return False
        at = bisect.bisect_right(self.times_ms, time_ms)
        self.times_ms.insert(at, time_ms)
        self.event_types.insert(at, event_type_code(event_type))
        self.checksums.insert(at, checksum)
        self.categories.insert(at, category)
        if len(self.times_ms) > max_events:
            drop = len(self.times_ms) - max_events
            del self.times_ms[:drop], self.event_types[:drop], self.checksums[:drop], self.categories[:drop]
        return True

    def pack(self) -> bytes:
        n = len(self.times_ms)
        if n > MAX_EVENTS:
            raise ValueError(f"a window holds at most {MAX_EVENTS} events, got {n}")
        base = self.times_ms[0] if n else 0
        deltas = [t - base for t in self.times_ms]
        wide = bool(deltas) and (max(deltas) >= 2**32 or min(deltas) < 0)
        distinct = list(dict.fromkeys(self.categories))
        if len(distinct) > 256:  # pragma: no cover - only with windows longer than 256 events
            raise ValueError("a window holds at most 256 distinct categories")
        slot = {c: i for i, c in enumerate(distinct)}
        return b"".join([
            _HEADER.pack(VERSION, n, _WIDE_TIMES if wide else 0, base),
            struct.pack(f"<{n}q", *self.times_ms) if wide else struct.pack(f"<{n}I", *deltas),
            struct.pack(f"<{n}b", *self.event_types),
            struct.pack(f"<{n}I", *self.checksums),
            bytes(map(slot.__getitem__, self.categories)),
            *(prefixed(c) for c in distinct),
        ])

    @classmethod
    def unpack(cls, data: bytes) -> UserWindow:
        try:
            version, n, flags, base = _HEADER.unpack_from(data)
            if version not in READS:
                raise DecodeError(f"window format {version}, this code reads {READS}")
            at = _HEADER.size
            if flags & _WIDE_TIMES:
                times = list(struct.unpack_from(f"<{n}q", data, at))
                at += 8 * n
            else:
                times = [base + d for d in struct.unpack_from(f"<{n}I", data, at)]
                at += 4 * n
            types = list(struct.unpack_from(f"<{n}b", data, at))
            checksums = list(struct.unpack_from(f"<{n}I", data, at + n))
            at += 5 * n
            slots = data[at: at + n]
            distinct = _distinct_categories(data, at + n, version) if n else []
            categories = [distinct[s] for s in slots]
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise DecodeError(f"corrupt window ({exc})") from None
        return cls(times, types, checksums, categories)

    @staticmethod
    def newest_ms_of(data: bytes) -> int:
        """Event time of the newest event of a packed window, without unpacking the rest."""
        _, n, flags, base = _HEADER.unpack_from(data)
        if n == 0:
            return 0
        if flags & _WIDE_TIMES:
            return int(struct.unpack_from("<q", data, _HEADER.size + 8 * (n - 1))[0])
        return base + int(struct.unpack_from("<I", data, _HEADER.size + 4 * (n - 1))[0])

    def through(self, event_id: str) -> int:
        """How many of the window's events are ``event_id``'s and those before it; 0 when it is not in the
        window (older than every event of a full window)."""
        try:
            return self.checksums.index(event_checksum(event_id)) + 1
        except ValueError:
            return 0

    def model_window(self, through: int | None = None) -> Window:
        """The window as the predictor takes it, its first ``through`` events (all by default); a copy: later
        edits of this window do not change it."""
        end = len(self.times_ms) if through is None else through
        return Window(self.categories[:end], np.asarray(self.event_types[:end], dtype=np.int8),
                      np.asarray(self.times_ms[:end], dtype=np.int64))


def _distinct_categories(data: bytes, at: int, version: int) -> list[str]:
    if version == 1:
        return data[at:].decode().split(_V1_SEP)
    distinct = []
    while at < len(data):
        text, at = read_prefixed(data, at)
        distinct.append(text)
    return distinct


def prefixed(text: str) -> bytes:
    """``text`` as UTF-8 after its 2-byte length: ids in packed state never need a separator."""
    raw = text.encode()
    return _LENGTH.pack(len(raw)) + raw


def read_prefixed(data: bytes, at: int) -> tuple[str, int]:
    """The text :func:`prefixed` wrote at ``at``, and where the next field starts. Raises IndexError when the
    text runs past the end, struct.error or UnicodeDecodeError on other corruption."""
    (size,) = _LENGTH.unpack_from(data, at)
    at += _LENGTH.size
    if at + size > len(data):
        raise IndexError("a length-prefixed text runs past the end")
    return data[at: at + size].decode(), at + size
