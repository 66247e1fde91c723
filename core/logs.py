"""Streaming readers of historical click logs, shared by the CLI (produce, replay) and model training.

Each reader yields :class:`~core.records.Click` records, one row at a time (constant memory),
accepts gzip files, and counts bad rows in a :class:`ReadReport` instead of stopping, unless ``strict``.

Formats:
- ``taobao``: Taobao UserBehavior CSV, no header: ``user,item,category,pv|fav|cart|buy,unix seconds``.
- ``rees46``: REES46 eCommerce CSV with header ``event_time,event_type,product_id,category_id,...``.
- ``generic``: CSV or JSON lines described by a YAML column mapping (see :class:`ColumnMapping`).
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml

from core.errors import ConfigError, InputError
from core.events import EVENT_TYPES
from core.records import Click

LogFormat = Literal["taobao", "rees46", "generic"]
FORMATS: tuple[str, ...] = ("taobao", "rees46", "generic")
TAOBAO_BEHAVIOUR = {"pv": "view", "fav": "fav", "cart": "cart", "buy": "purchase"}
MAX_REPORTED_BAD_ROWS = 5


class BadRow(ValueError):
    """A row that cannot become a click; the message is the reason."""


@dataclasses.dataclass
class ReadReport:
    """What a reader saw: rows read, rows skipped, and where the first bad ones are."""

    source: str
    rows: int = 0
    bad: int = 0
    first_bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def good(self) -> int:
        return self.rows - self.bad

    def add_bad(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.first_bad) < MAX_REPORTED_BAD_ROWS:
            self.first_bad.append((line, reason))

    def summary(self) -> str:
        text = f"{self.source}: {self.rows} rows, {self.good} clicks, {self.bad} bad rows skipped"
        if self.first_bad:
            text += " (" + "; ".join(f"line {n}: {r}" for n, r in self.first_bad)
            text += ", ..." if self.bad > len(self.first_bad) else ""
            text += ")"
        return text


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """How a generic CSV / JSON-lines log maps onto clicks, loaded from YAML.

    Example::

        format: csv            # or jsonl
        delimiter: ","
        header: true           # CSV without header: columns are 0-based indexes
        time_format: unix_s    # unix_s | unix_ms | iso
        columns: {user_id: uid, item_id: sku, category_id: cat, event_type: action, event_time: ts,
                  session_id: session, price: price, event_id: id}   # the last three are optional
        event_types: {click: view, basket: cart, order: purchase}   # raw value -> click event type
        user_attributes: [segment, device]                         # columns copied as user attributes

    A column may instead be a constant, ``event_type: {const: view}`` (a log of views only, without an event
    type column), and the event time may be a day plus an offset within it, ``event_time: {day: eventdate,
    offset_ms: timeframe}`` (DIGINETICA: the session's day, ISO ``YYYY-MM-DD``, and ms since the session
    began). ``model/mappings/`` holds documented mappings of the shared logs.
    """

    columns: dict[str, Any]
    format: Literal["csv", "jsonl"] = "csv"
    delimiter: str = ","
    header: bool = True
    time_format: Literal["unix_s", "unix_ms", "iso"] = "unix_s"
    event_types: dict[str, str] = dataclasses.field(default_factory=dict)
    user_attributes: tuple[Any, ...] = ()

    REQUIRED = ("user_id", "item_id", "category_id", "event_type", "event_time")
    OPTIONAL = ("session_id", "price", "event_id")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ColumnMapping:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"column mapping {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"column mapping {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("columns"), dict):
            raise ConfigError(f"column mapping {path} needs a 'columns' mapping")
        missing = [c for c in cls.REQUIRED if c not in raw["columns"]]
        unknown = sorted(set(raw["columns"]) - set(cls.REQUIRED) - set(cls.OPTIONAL))
        if missing or unknown:
            raise ConfigError(f"column mapping {path}: missing columns {missing}, unknown columns {unknown}")
        for name, spec in raw["columns"].items():
            if isinstance(spec, dict) and not (set(spec) == {"const"} or (
                    name == "event_time" and set(spec) == {"day", "offset_ms"})):
                raise ConfigError(f"column mapping {path}: column {name} is {spec}; a column is a name, an "
                                  "index, {const: VALUE}, or for event_time {day: COLUMN, offset_ms: COLUMN}")
        bad_types = sorted(set(raw.get("event_types", {}).values()) - set(EVENT_TYPES))
        if bad_types:
            raise ConfigError(f"column mapping {path}: event_types maps to unknown types {bad_types}")
        try:
            mapping = cls(columns=raw["columns"], format=raw.get("format", "csv"),
                          delimiter=raw.get("delimiter", ","), header=bool(raw.get("header", True)),
                          time_format=raw.get("time_format", "unix_s"),
                          event_types={str(k): v for k, v in (raw.get("event_types") or {}).items()},
                          user_attributes=tuple(raw.get("user_attributes") or ()))
        except TypeError as exc:
            raise ConfigError(f"column mapping {path}: {exc}") from None
        if mapping.format not in ("csv", "jsonl") or mapping.time_format not in ("unix_s", "unix_ms", "iso"):
            raise ConfigError(f"column mapping {path}: format must be csv|jsonl, time_format unix_s|unix_ms|iso")
        return mapping


def open_text(path: str | os.PathLike[str]) -> io.TextIOBase:
    """Open a log as text, transparently gunzipping; a missing file is one clear InputError."""
    p = Path(path)
    try:
        with open(p, "rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        if gzipped:
            return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", errors="replace", newline="")
        return open(p, encoding="utf-8", errors="replace", newline="")
    except FileNotFoundError:
        raise InputError(f"log file {p} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"log file {p} is a directory") from None
    except PermissionError:
        raise InputError(f"log file {p} is not readable") from None


def _id(value: Any, name: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text:
        raise BadRow(f"missing {name}")
    return text


def _parse_time_ms(value: Any, time_format: str) -> int:
    try:
        if time_format == "unix_s":
            return int(round(float(value) * 1000))
        if time_format == "unix_ms":
            return int(float(value))
        text = str(value).strip().replace(" UTC", "+00:00").replace("Z", "+00:00")
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except (TypeError, ValueError, OverflowError):
        raise BadRow(f"bad event time {value!r}") from None


def _taobao_rows(f: io.TextIOBase, prefix: str) -> Iterator[tuple[int, Click | BadRow]]:
    for line_no, row in enumerate(csv.reader(f), start=1):
        if len(row) != 5:
            yield line_no, BadRow(f"expected 5 columns, got {len(row)}")  # type: ignore[misc]
            continue
        user, item, category, behaviour, ts = row
        try:
            event_type = TAOBAO_BEHAVIOUR.get(behaviour)
            if event_type is None:
                raise BadRow(f"unknown behaviour {behaviour!r}")
            yield line_no, Click(
                event_id=f"{prefix}:{line_no}", user_id=_id(user, "user id"), item_id=_id(item, "item id"),
                category_id=_id(category, "category id"), event_type=event_type,
                event_time_ms=_parse_time_ms(ts, "unix_s"))
        except BadRow as exc:
            yield line_no, exc  # type: ignore[misc]


def _rees46_rows(f: io.TextIOBase, prefix: str) -> Iterator[tuple[int, Click | BadRow]]:
    reader = csv.reader(f)
    header = next(reader, None)
    expected = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
                "user_id", "user_session"]
    if header != expected:
        raise InputError(f"not a REES46 log: header is {header}, expected {','.join(expected)}")
    for line_no, row in enumerate(reader, start=2):
        if len(row) != 9:
            yield line_no, BadRow(f"expected 9 columns, got {len(row)}")  # type: ignore[misc]
            continue
        event_time, event_type, product, category, _code, _brand, price, user, session = row
        try:
            if event_type not in EVENT_TYPES or event_type == "unknown":
                raise BadRow(f"unknown event type {event_type!r}")
            try:
                price_value = float(price) if price else None
            except ValueError:
                raise BadRow(f"bad price {price!r}") from None
            yield line_no, Click(
                event_id=f"{prefix}:{line_no}", user_id=_id(user, "user id"), item_id=_id(product, "product id"),
                category_id=_id(category, "category id"), event_type=event_type,
                event_time_ms=_parse_time_ms(event_time, "iso"), session_id=session or None, price=price_value)
        except BadRow as exc:
            yield line_no, exc  # type: ignore[misc]


def _generic_rows(f: io.TextIOBase, prefix: str, m: ColumnMapping) -> Iterator[tuple[int, Click | BadRow]]:
    records: Iterator[tuple[int, Any]]
    if m.format == "jsonl":
        def parse_json() -> Iterator[tuple[int, Any]]:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, BadRow(f"not JSON ({exc.msg})")
        records = parse_json()
    elif m.header:
        records = enumerate(csv.DictReader(f, delimiter=m.delimiter), start=2)
    else:
        records = enumerate(csv.reader(f, delimiter=m.delimiter), start=1)
    cols = m.columns

    def get(rec: Any, key: Any) -> Any:
        if isinstance(key, dict):
            return key["const"]
        try:
            return rec[key]
        except (KeyError, IndexError, TypeError):
            return None

    def need(rec: Any, name: str) -> Any:
        """The value of a required column; a column the row does not have is a bad row that names it."""
        key = cols[name]
        if isinstance(key, dict) or (isinstance(rec, dict) and key in rec) or (
                isinstance(rec, list) and isinstance(key, int) and -len(rec) <= key < len(rec)):
            return get(rec, key)
        where = f"columns are {sorted(k for k in rec if k is not None)}" if isinstance(rec, dict) else \
            f"{len(rec)} columns" if isinstance(rec, list) else "not an object"
        raise BadRow(f"no {name} column {key!r} ({where})")

    def event_time_ms(rec: Any) -> int:
        spec = cols["event_time"]
        if isinstance(spec, dict) and "day" in spec:
            day = need_key(rec, spec["day"], "event_time day")
            offset = need_key(rec, spec["offset_ms"], "event_time offset_ms")
            try:
                day_ms = int(datetime.fromisoformat(str(day).strip()).replace(tzinfo=timezone.utc).timestamp()
                             * 1000)
                return day_ms + int(float(offset))
            except (TypeError, ValueError, OverflowError):
                raise BadRow(f"bad day {day!r} or offset {offset!r}") from None
        return _parse_time_ms(need(rec, "event_time"), m.time_format)

    def need_key(rec: Any, key: Any, name: str) -> Any:
        try:
            return rec[key]
        except (KeyError, IndexError, TypeError):
            raise BadRow(f"no {name} column {key!r}") from None

    for line_no, rec in records:
        if isinstance(rec, BadRow):
            yield line_no, rec  # type: ignore[misc]
            continue
        try:
            raw_type = str(need(rec, "event_type") or "").strip()
            event_type = m.event_types.get(raw_type, raw_type)
            if event_type not in EVENT_TYPES or event_type == "unknown":
                raise BadRow(f"unknown event type {raw_type!r}")
            price = get(rec, cols["price"]) if "price" in cols else None
            try:
                price = float(price) if price not in (None, "") else None
            except (TypeError, ValueError):
                raise BadRow(f"bad price {price!r}") from None
            session = get(rec, cols["session_id"]) if "session_id" in cols else None
            event_id = get(rec, cols["event_id"]) if "event_id" in cols else None
            attrs = {str(a): str(v) for a in m.user_attributes if (v := get(rec, a)) not in (None, "")}
            yield line_no, Click(
                event_id=str(event_id) if event_id not in (None, "") else f"{prefix}:{line_no}",
                user_id=_id(need(rec, "user_id"), "user id"),
                item_id=_id(need(rec, "item_id"), "item id"),
                category_id=_id(need(rec, "category_id"), "category id"),
                event_type=event_type,
                event_time_ms=event_time_ms(rec),
                session_id=str(session) if session not in (None, "") else None,
                price=price, user_attributes=attrs)
        except BadRow as exc:
            yield line_no, exc  # type: ignore[misc]


def read_log(path: str | os.PathLike[str], fmt: LogFormat, *, mapping: ColumnMapping | None = None,
             strict: bool = False, report: ReadReport | None = None,
             id_prefix: str | None = None) -> Iterator[Click]:
    """Yield the clicks of one log file in file order; bad rows go to ``report`` (or raise under strict).

    Event ids are ``<id_prefix>:<line number>`` (prefix defaults to the file name) unless the log has its
    own event id column, so replaying the same file gives the same ids.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "generic" and mapping is None:
        raise ConfigError("the generic format needs a column mapping (--mapping FILE.yaml)")
    report = report if report is not None else ReadReport(str(path))
    prefix = id_prefix or Path(path).name.removesuffix(".gz")
    with open_text(path) as f:
        if fmt == "taobao":
            rows = _taobao_rows(f, prefix)
        elif fmt == "rees46":
            rows = _rees46_rows(f, prefix)
        else:
            assert mapping is not None
            rows = _generic_rows(f, prefix, mapping)
        for line_no, row in rows:
            report.rows += 1
            if isinstance(row, BadRow):
                if strict:
                    raise InputError(f"{path}: line {line_no}: {row}")
                report.add_bad(line_no, str(row))
                continue
            yield row
