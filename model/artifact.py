"""The model artifact folder: ``model.keras`` (weights) + ``manifest.json`` (everything needed to rebuild it)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from core.errors import ModelError
from model.config import NetworkConfig
from model.features import FeatureSpec

WEIGHTS = "model.keras"
BASELINES = "baselines.json"  # model.baselines.StoredBaselines, written by training, read by evaluate and serving
MANIFEST = "manifest.json"
FORMAT_VERSION = 3  # 2: event type and purchase heads read a window summary; 3: baselines.json (stored
# baselines and the weights of the final mix, model.mix)


def weights_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / MANIFEST)


def read_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an artifact folder; a missing or corrupt artifact is one ModelError naming the path."""
    root = Path(model_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise ModelError(f"no model artifact at {root} (train one: clickstream train LOG... --out {root})")
    try:
        manifest = json.loads(path.read_text())
        NetworkConfig.from_json(manifest["network"])
        FeatureSpec.from_json(manifest["features"])
        version = manifest["version"]
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: {root} is not a model artifact") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: artifact format {manifest.get('format_version')}, this code reads "
                         f"{FORMAT_VERSION} (retrain: clickstream train LOG... --out {root})")
    weights = root / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{weights} is missing")
    if manifest.get("weights_sha256") and weights_digest(weights) != manifest["weights_sha256"]:
        raise ModelError(f"{weights} does not match its manifest (sha256 differs): the artifact is corrupt")
    baselines = root / BASELINES
    if not baselines.is_file():
        raise ModelError(f"{baselines} is missing")
    if manifest.get("baselines_sha256") and weights_digest(baselines) != manifest["baselines_sha256"]:
        raise ModelError(f"{baselines} does not match its manifest (sha256 differs): the artifact is corrupt")
    assert isinstance(version, str)
    return manifest
