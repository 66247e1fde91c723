"""The one codec for the Avro contracts in this folder (fastavro, schemaless, schemas parsed once).

Plain messages are bare Avro binary. With ``schema_id`` set, messages use the Confluent wire format
(magic byte 0, 4-byte big-endian schema id, Avro binary) for users with a schema registry.

:class:`AvroCodec` works on the Avro dicts; :class:`RecordCodec` converts the typed records of
:mod:`core.records` at the edge, which is what the CLI and the worker use.
"""
from __future__ import annotations

import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import fastavro

from core.errors import DecodeError

SCHEMA_DIR = Path(__file__).resolve().parent
SchemaName = Literal["click", "prediction"]
_MAGIC = 0
_HEADER = struct.Struct(">bI")


def schema_path(name: str) -> Path:
    """Path of the current version of a contract."""
    return SCHEMA_DIR / f"{name}.avsc"


@cache
def load_schema(name: str) -> Any:
    """The parsed current schema of a contract (parsed once per process)."""
    with open(schema_path(name), encoding="utf-8") as f:
        return fastavro.parse_schema(json.load(f))


class AvroCodec:
    """Encode and decode one contract; ``schema_id`` switches on Confluent framing."""

    def __init__(self, name: SchemaName, schema_id: int | None = None) -> None:
        self.name = name
        self.schema = load_schema(name)
        self.schema_id = schema_id
        self._header = _HEADER.pack(_MAGIC, schema_id) if schema_id is not None else b""

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode one message; any malformed input raises :class:`DecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"{self.name}: expected bytes, got {type(data).__name__}")
        buf = io.BytesIO(data)
        if self.schema_id is not None:
            header = buf.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise DecodeError(f"{self.name}: {len(data)} bytes is too short for the Confluent header")
            magic, schema_id = _HEADER.unpack(header)
            if magic != _MAGIC:
                raise DecodeError(f"{self.name}: magic byte {magic} is not the Confluent magic byte 0")
            if schema_id != self.schema_id:
                raise DecodeError(f"{self.name}: schema id {schema_id}, expected {self.schema_id}")
        try:
            record = fastavro.schemaless_reader(buf, self.schema, None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, IndexError, ...
            raise DecodeError(f"{self.name}: not a valid Avro message ({type(exc).__name__}: {exc})") from None
        if buf.tell() != len(data):
            raise DecodeError(f"{self.name}: {len(data) - buf.tell()} trailing bytes after the message")
        return record


class AvroRecord(Protocol):
    SCHEMA: Any

    def to_avro(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=AvroRecord)


class RecordCodec(Generic[R]):
    """Encode and decode typed records (``Click``, ``Prediction``) of one contract."""

    def __init__(self, record_type: type[R], schema_id: int | None = None) -> None:
        self.record_type = record_type
        self.avro = AvroCodec(record_type.SCHEMA, schema_id)

    def encode(self, record: R) -> bytes:
        return self.avro.encode(record.to_avro())

    def decode(self, data: bytes) -> R:
        """Decode one message; malformed input raises :class:`DecodeError`."""
        return self.record_type.from_avro(self.avro.decode(data))  # type: ignore[attr-defined, no-any-return]
