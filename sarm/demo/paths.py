"""Where the embedded default demo (SAE, head, store, data) is built and cached."""

from __future__ import annotations

from pathlib import Path

from sarm.cachedir import cache_dir

DEMO_NAME = "smollm2-demo"
DEMO_BACKBONE = "smollm2-135m-instruct"  # sarm.backbones.EMBEDDED_NAME
DEMO_LAYER = 15


def demo_root() -> Path:
    """``$SARM_CACHE_DIR/demo`` (default ``~/.cache/sarm/demo``)."""
    return cache_dir() / "demo"


def model_dir() -> Path:
    """The demo SARM in our checkpoint layout (what ``load_sarm("smollm2-demo")`` reads)."""
    return demo_root() / "model"


def store_path() -> Path:
    """The demo feature store (DuckDB file)."""
    return demo_root() / "store.duckdb"
