"""The ``meta`` key-value table: model fingerprint, dataset, statistics settings."""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

#: fingerprint keys that must match for stored latents to be comparable
MODEL_KEYS: tuple[str, ...] = ("backbone", "layer", "sae")


def put_meta(cur: duckdb.DuckDBPyConnection, values: Mapping[str, object]) -> None:
    """Insert or replace metadata entries (inside the caller's transaction)."""
    for key, value in values.items():
        cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])
