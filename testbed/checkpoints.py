"""A cache of trained model states, keyed by everything that determines them.

Files are ``<cache dir>/<key>.pt`` holding ``{"state": state_dict, "meta": {...}}``
(tensors and plain values only, read back with ``weights_only=True``). Writes go
to a temporary file renamed into place, so parallel workers never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from testbed.atomic import atomic_write

ENV_CACHE_DIR = "TESTBED_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/testbed/checkpoints")
# Bump when training code changes what a given key produces.
FORMAT_VERSION = 1


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    chosen = cache_dir or os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


def checkpoint_key(parts: dict[str, Any]) -> str:
    """A stable hash of the JSON form of ``parts`` (plus the format version and torch version)."""
    full = {"format": FORMAT_VERSION, "torch": torch.__version__, **parts}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def checkpoint_path(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    return resolve_cache_dir(cache_dir) / f"{key}.pt"


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state, meta), or None when there is no usable file (a damaged one is ignored and retrained)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["state"], blob.get("meta", {})
    except Exception:  # noqa: BLE001 - any unreadable file is a cache miss, never a crash
        return None


def save_checkpoint(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"state": {k: v.detach().cpu().clone() for k, v in state.items()}, "meta": meta}
    atomic_write(path, lambda f: torch.save(blob, f))
