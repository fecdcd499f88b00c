"""Where built artefacts are cached: ``$SARM_CACHE_DIR``, else ``~/.cache/sarm``."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SARM_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root (the embedded backbone's safetensors, the demo SARM and store)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sarm"
    return Path(root).expanduser()
