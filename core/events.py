"""The one table of event types, with stable codes.

Codes are stored on disk (packed windows in RocksDB and their changelog) and are the positions of the
symbols in ``schemas/click.avsc``'s enum, which Avro also encodes by position: a type keeps its code forever.
New types are appended with the next code (and appended to the schema's symbols); none is ever reordered
or reused. A test pins this table against the schema and against the codes stored so far.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

EVENT_TYPE_CODES: Mapping[str, int] = MappingProxyType({
    "unknown": 0,  # a symbol this reader does not know (Avro's enum default), never a training target
    "view": 1,
    "fav": 2,
    "cart": 3,
    "remove_from_cart": 4,
    "purchase": 5,
})
EVENT_TYPES: tuple[str, ...] = tuple(sorted(EVENT_TYPE_CODES, key=EVENT_TYPE_CODES.__getitem__))
UNKNOWN = EVENT_TYPE_CODES["unknown"]
assert EVENT_TYPES == tuple(EVENT_TYPE_CODES) and list(EVENT_TYPE_CODES.values()) == list(range(len(EVENT_TYPES)))


def event_type_code(name: str) -> int:
    """The stable code of an event type name; unknown names get the code of ``unknown``."""
    return EVENT_TYPE_CODES.get(name, UNKNOWN)
