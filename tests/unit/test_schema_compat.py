"""Every contract version must be readable by the next: checked with the avro package's own checker."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas.codec import SchemaName

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CONTRACTS = get_args(SchemaName)  # every contract the codec reads, new ones included


def versions(name: str) -> list[Path]:
    """Released versions in order, then the current file."""
    history = sorted(SCHEMAS.glob(f"history/{name}.v*.avsc"),
                     key=lambda p: int(re.search(r"\.v(\d+)\.avsc$", p.name).group(1)))  # type: ignore[union-attr]
    return [*history, SCHEMAS / f"{name}.avsc"]


def compatible(reader: dict, writer: dict) -> bool:
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer)))
    return result.compatibility is SchemaCompatibilityType.compatible


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", CONTRACTS)
def test_each_version_reads_the_previous_one(name: str) -> None:
    paths = versions(name)
    for older, newer in zip(paths, paths[1:]):
        assert compatible(load(newer), load(older)), f"{newer.name} cannot read data written with {older.name}"


@pytest.mark.parametrize("name", CONTRACTS)
def test_each_version_is_read_by_the_previous_one(name: str) -> None:
    """Forward compatibility: consumers still on the older schema read what the newer one writes."""
    paths = versions(name)
    for older, newer in zip(paths, paths[1:]):
        assert compatible(load(older), load(newer)), f"{older.name} cannot read data written with {newer.name}"


@pytest.mark.parametrize("name", CONTRACTS)
def test_checker_rejects_a_breaking_change(name: str) -> None:
    """Guards the check above: a new required field without default must be reported as incompatible."""
    current = load(SCHEMAS / f"{name}.avsc")
    broken = dict(current, fields=[*current["fields"], {"name": "new_required", "type": "string"}])
    assert not compatible(broken, current)
    additive = dict(current, fields=[*current["fields"], {"name": "new_optional", "type": ["null", "string"],
                                                          "default": None}])
    assert compatible(additive, current)


def test_event_type_enum_can_grow() -> None:
    """A reader with an older enum reads a newer symbol as the default 'unknown'."""
    current = load(SCHEMAS / "click.avsc")
    grown = json.loads(json.dumps(current))
    enum = next(f for f in grown["fields"] if f["name"] == "event_type")["type"]
    enum["symbols"].append("wishlist")
    assert compatible(current, grown)


def test_every_contract_file_is_covered() -> None:
    assert {p.stem for p in SCHEMAS.glob("*.avsc")} == set(CONTRACTS)
