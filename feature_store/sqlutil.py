"""Small helpers for DuckDB results to pandas (without per-call overhead) and Arrow inserts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

Params = Sequence[Any] | Mapping[str, Any] | None


def small_frame(cur: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> pd.DataFrame:
    """A DataFrame of a result of at most a few thousand rows.

    Builds it from ``fetchall`` (DuckDB's ``.df()`` costs milliseconds even for
    20 rows, which matters for queries that must answer in under 50 ms).
    """
    cur.execute(sql, params)
    columns = [d[0] for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=columns)


def large_frame(cur: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> pd.DataFrame:
    """A DataFrame of a large result, through DuckDB's vectorised conversion."""
    return cur.execute(sql, params).df()


def fetch_one(cur: duckdb.DuckDBPyConnection, sql: str, params: Params = None) -> tuple | None:
    """The first row of a result, or None; always drains the result.

    ``fetchone`` would leave the result open, and an open result keeps a read
    transaction alive on the cursor, which then blocks CHECKPOINT after
    later UPDATEs.
    """
    rows = cur.execute(sql, params).fetchall()
    return rows[0] if rows else None


def insert_arrow(cur, table: str, rows: pa.Table) -> None:
    """``INSERT INTO table SELECT * FROM rows`` through a registered Arrow view."""
    view = f"_incoming_{table}"
    columns = ", ".join(rows.column_names)
    cur.register(view, rows)
    try:
        cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view}")
    finally:
        cur.unregister(view)
