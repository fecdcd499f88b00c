"""Where built artefacts are cached: ``$SARM_CACHE_DIR``, else ``~/.cache/sarm``.

The embedded default SARM (``load_sarm("smollm2-demo")``) and its feature store
are built by ``sarm build-demo`` into :func:`default_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sarm.constants import CACHE_ENV


def cache_dir() -> Path:
    """The cache root (the embedded backbone's safetensors, the default SARM and store)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sarm"
    return Path(root).expanduser()


def default_dir() -> Path:
    """``$SARM_CACHE_DIR/demo``: everything the default build writes."""
    return cache_dir() / "demo"


def default_model_dir() -> Path:
    """The default SARM in our checkpoint layout (what ``load_sarm("smollm2-demo")`` reads)."""
    return default_dir() / "model"


def default_store_path() -> Path:
    """The default SARM's feature store (DuckDB file)."""
    return default_dir() / "store.duckdb"
