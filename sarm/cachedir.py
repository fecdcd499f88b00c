"""Where built artefacts are cached: ``$SARM_CACHE_DIR``, else ``~/.cache/sarm``.

The embedded default SARM (``load_sarm("default")``) ships its weights in the
package (:func:`shipped_default_dir`); its feature store is built by
``sarm build-default`` into :func:`default_dir`. The template-trained demo SARM
(``load_sarm("smollm2-demo")``) and its store are built by ``sarm build-demo``
into :func:`demo_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

from sarm.constants import CACHE_ENV


def cache_dir() -> Path:
    """The cache root (the embedded backbone's safetensors, the default SARM and store)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sarm"
    return Path(root).expanduser()


def shipped_default_dir() -> Path:
    """``sarm/assets/default``: the default SARM's shipped SAE, head and manifest."""
    return Path(__file__).resolve().parent / "assets" / "default"


def default_dir() -> Path:
    """``$SARM_CACHE_DIR/default``: what ``sarm build-default`` writes (the store)."""
    return cache_dir() / "default"


def default_store_path() -> Path:
    """The default SARM's feature store (DuckDB file): the audit set, test split + xstest."""
    return default_dir() / "store.duckdb"


def demo_dir() -> Path:
    """``$SARM_CACHE_DIR/demo``: everything the demo build writes."""
    return cache_dir() / "demo"


def demo_model_dir() -> Path:
    """The demo SARM in our checkpoint layout (what ``load_sarm("smollm2-demo")`` reads)."""
    return demo_dir() / "model"


def demo_store_path() -> Path:
    """The demo SARM's feature store (DuckDB file)."""
    return demo_dir() / "store.duckdb"
