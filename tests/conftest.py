"""Fixtures shared by unit and integration tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    """The shared real clickstream samples: CLICKSTREAM_DATA_DIR, else ../shared/data when it exists."""
    configured = os.environ.get("CLICKSTREAM_DATA_DIR")
    candidate = Path(configured) if configured else REPO.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def taobao_sample() -> Path:
    root = data_dir()
    path = root / "taobao" / "UserBehavior-sample.csv" if root else None
    if path is None or not path.is_file():
        pytest.skip("Taobao sample not found: set CLICKSTREAM_DATA_DIR to the folder holding taobao/")
    return path


@pytest.fixture(scope="session")
def rees46_sample() -> Path:
    root = data_dir()
    path = root / "rees46" / "2019-Oct-Nov-head.csv" if root else None
    if path is None or not path.is_file():
        pytest.skip("REES46 sample not found: set CLICKSTREAM_DATA_DIR to the folder holding rees46/")
    return path
