"""The one codec for the Avro contracts in this folder (fastavro, schemaless, schemas parsed once).

Three wire formats are read:

- bare Avro binary, written with the current schema (the default for what this project writes);
- Avro single-object encoding (``C3 01``, the writer schema's 8-byte CRC-64-AVRO fingerprint, the body): the
  writer's schema is looked up by fingerprint among the released versions (``schemas/history/``), the current
  one and any ``.avsc`` files in ``CLICKSTREAM_SCHEMA_DIR`` (a newer producer's schema), and resolved against
  the current schema by Avro's rules: a field the reader does not know is skipped, a missing one takes its
  default, an unknown enum symbol becomes the enum's default (``unknown`` for event types);
- with ``schema_id`` set, the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary),
  whose id must be the configured one (no registry lookup).

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
from fastavro.schema import fingerprint, to_parsing_canonical_form

from core.errors import ConfigError, DecodeError

SCHEMA_DIR = Path(__file__).resolve().parent
SchemaName = Literal["click", "prediction", "category_demand", "audience"]
_MAGIC = 0
_HEADER = struct.Struct(">bI")
_SINGLE_OBJECT = b"\xc3\x01"


def schema_path(name: str) -> Path:
    """Path of the current version of a contract."""
    return SCHEMA_DIR / f"{name}.avsc"


@cache
def load_schema(name: str) -> Any:
    """The parsed current schema of a contract (parsed once per process)."""
    with open(schema_path(name), encoding="utf-8") as f:
        return fastavro.parse_schema(json.load(f))


def single_object_fingerprint(schema: Any) -> bytes:
    """The 8 bytes (CRC-64-AVRO, little-endian) that single-object encoding puts before the body."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@cache
def writer_schemas(name: str, extra_dir: str | None = None) -> dict[bytes, Any]:
    """Every schema of a contract a writer may have used, by single-object fingerprint."""
    paths = [*sorted((SCHEMA_DIR / "history").glob(f"{name}.v*.avsc")), schema_path(name)]
    if extra_dir:
        extra = Path(extra_dir)
        if not extra.is_dir():
            raise ConfigError(f"schema folder {extra} does not exist (CLICKSTREAM_SCHEMA_DIR)")
        paths += sorted(extra.glob("*.avsc"))
    schemas = {}
    for path in paths:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            parsed = fastavro.parse_schema(raw, _write_hint=False)
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            raise ConfigError(f"schema {path} is not a valid Avro schema: {exc}") from None
        if parsed.get("name") == load_schema(name)["name"]:
            schemas[single_object_fingerprint(parsed)] = parsed
    return schemas


class AvroCodec:
    """Encode and decode one contract. Writes bare Avro, single-object encoding (``single_object``) or, with
    ``schema_id``, the Confluent framing; reads all of them (see the module docstring)."""

    def __init__(self, name: SchemaName, schema_id: int | None = None, *, single_object: bool = False,
                 schema_dir: str | None = None) -> None:
        self.name = name
        self.schema = load_schema(name)
        self.schema_id = schema_id
        self.writers = writer_schemas(name, schema_dir)
        if schema_id is not None:
            self._header = _HEADER.pack(_MAGIC, schema_id)
        elif single_object:
            self._header = _SINGLE_OBJECT + single_object_fingerprint(self.schema)
        else:
            self._header = b""
        # fields whose type is a union of null and one record: naming the branch at encode time spares fastavro
        # from matching the datum against the record schema (Python-side validation, ~20 us per message)
        self._named_unions = [(f["name"], branches[1]["name"]) for f in self.schema["fields"]
                              if isinstance(branches := f["type"], list) and len(branches) == 2
                              and branches[0] == "null" and isinstance(branches[1], dict)
                              and branches[1].get("type") == "record"]

    def encode(self, record: dict[str, Any]) -> bytes:
        if self._named_unions:
            record = dict(record)
            for field, name in self._named_unions:
                value = record.get(field)
                if isinstance(value, dict):
                    record[field] = (name, value)
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode one message; any malformed input raises :class:`DecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"{self.name}: expected bytes, got {type(data).__name__}")
        buf = io.BytesIO(data)
        writer = self.schema
        if data[:2] == _SINGLE_OBJECT:  # a bare click never starts so: as a string length it would be negative
            fp = bytes(data[2:10])
            writer = self.writers.get(fp)
            if writer is None:
                raise DecodeError(f"{self.name}: written with an unknown schema (fingerprint {fp.hex()}); put "
                                  "the producer's .avsc in CLICKSTREAM_SCHEMA_DIR")
            buf.seek(10)
        elif self.schema_id is not None:
            header = buf.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise DecodeError(f"{self.name}: {len(data)} bytes is too short for the Confluent header")
            magic, schema_id = _HEADER.unpack(header)
            if magic != _MAGIC:
                raise DecodeError(f"{self.name}: magic byte {magic} is not the Confluent magic byte 0")
            if schema_id != self.schema_id:
                raise DecodeError(f"{self.name}: schema id {schema_id}, expected {self.schema_id}")
        try:
            record = fastavro.schemaless_reader(buf, writer, self.schema if writer is not self.schema else None)
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

    def __init__(self, record_type: type[R], schema_id: int | None = None, *, single_object: bool = False,
                 schema_dir: str | None = None) -> None:
        self.record_type = record_type
        self.avro = AvroCodec(record_type.SCHEMA, schema_id, single_object=single_object, schema_dir=schema_dir)

    def encode(self, record: R) -> bytes:
        return self.avro.encode(record.to_avro())

    def decode(self, data: bytes) -> R:
        """Decode one message; malformed input raises :class:`DecodeError`."""
        return self.record_type.from_avro(self.avro.decode(data))  # type: ignore[attr-defined, no-any-return]
