"""Chunk results as Arrow tables, and the one-transaction chunk commit.

A chunk's examples, its latents and its row in ``ingest_chunks`` commit in a
single transaction, so after a crash a chunk is either fully stored or absent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.errors import StoreError
from feature_store.plan import Chunk, PlannedExample
from feature_store.sqlutil import fetch_one

if TYPE_CHECKING:
    from feature_store.store import FeatureStore

EXAMPLES_SCHEMA = pa.schema(
    [
        ("example_id", pa.int64()),
        ("group_index", pa.int64()),
        ("group_id", pa.string()),
        ("role", pa.string()),
        ("response_index", pa.int32()),
        ("kind", pa.string()),
        ("subset", pa.string()),
        ("target", pa.float64()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("prompt_messages", pa.string()),
        ("reward", pa.float64()),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)
LATENTS_SCHEMA = pa.schema(
    [("example_id", pa.int64()), ("feature_id", pa.int32()), ("activation", pa.float32())]
)


@dataclass(frozen=True)
class ChunkData:
    """The rows one chunk adds to ``examples`` and ``latents``."""

    examples: pa.Table
    latents: pa.Table

    def __post_init__(self) -> None:
        if not self.examples.schema.equals(EXAMPLES_SCHEMA):
            raise ValueError("chunk examples do not have the examples table's schema")
        if not self.latents.schema.equals(LATENTS_SCHEMA):
            raise ValueError("chunk latents do not have the latents table's schema")

    @property
    def n_tokens(self) -> int:
        return int(pc.sum(self.examples["n_tokens"]).as_py() or 0)

    def check_ids(self, chunk: Chunk) -> None:
        """Raise unless the rows are exactly examples ``chunk.start .. chunk.stop - 1``."""
        ids = self.examples["example_id"].to_numpy()
        if not np.array_equal(ids, np.arange(chunk.start, chunk.stop)):
            raise StoreError(
                f"chunk {chunk.index} must hold examples {chunk.start}..{chunk.stop - 1}"
            )
        lat = self.latents["example_id"].to_numpy()
        if lat.size and (lat.min() < chunk.start or lat.max() >= chunk.stop):
            raise StoreError(f"chunk {chunk.index} has latents of examples outside the chunk")

    @classmethod
    def from_arrays(
        cls,
        examples: Sequence[PlannedExample],
        rewards: np.ndarray,
        n_tokens: np.ndarray,
        truncated: np.ndarray,
        indices: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        d_sae: int,
    ) -> ChunkData:
        """Validate model outputs and lay them out as rows (latents sorted by feature id)."""
        _check_outputs(examples, rewards, indices, values, d_sae)
        return cls(
            _examples_table(examples, rewards, n_tokens, truncated),
            _latents_table(examples, indices, values),
        )


def _check_outputs(examples, rewards, indices, values, d_sae: int) -> None:
    n = len(examples)
    if not (len(rewards) == len(indices) == len(values) == n):
        raise StoreError(f"the model returned results for {len(rewards)} of {n} examples")
    for ex, reward, idx, val in zip(examples, rewards, indices, values, strict=True):
        where = f"example {ex.example_id} (group {ex.group_id!r}, {ex.role} {ex.response_index})"
        if not np.isfinite(reward):
            raise StoreError(f"{where}: the model returned a non-finite reward {reward}")
        if len(idx) != len(val):
            raise StoreError(f"{where}: {len(idx)} latent indices but {len(val)} values")
        if len(idx) and (np.min(idx) < 0 or np.max(idx) >= d_sae):
            raise StoreError(f"{where}: latent index outside 0..{d_sae - 1}")
        if not np.isfinite(val).all():
            raise StoreError(f"{where}: non-finite latent activation")


def _examples_table(examples, rewards, n_tokens, truncated) -> pa.Table:
    columns = {
        "example_id": [e.example_id for e in examples],
        "group_index": [e.group_index for e in examples],
        "group_id": [e.group_id for e in examples],
        "role": [e.role for e in examples],
        "response_index": [e.response_index for e in examples],
        "kind": [e.kind for e in examples],
        "subset": [e.subset for e in examples],
        "target": [e.target for e in examples],
        "prompt": [e.prompt for e in examples],
        "response": [e.response for e in examples],
        "prompt_messages": [
            json.dumps(list(e.prompt_messages), ensure_ascii=False) for e in examples
        ],
        "reward": np.asarray(rewards, dtype=np.float64),
        "n_tokens": np.asarray(n_tokens, dtype=np.int32),
        "truncated": np.asarray(truncated, dtype=bool),
    }
    return pa.table(columns, schema=EXAMPLES_SCHEMA)


def _latents_table(examples, indices, values) -> pa.Table:
    ids, feats, acts = [], [], []
    for ex, idx, val in zip(examples, indices, values, strict=True):
        idx = np.asarray(idx, dtype=np.int32)
        order = np.argsort(idx, kind="stable")
        ids.append(np.full(len(idx), ex.example_id, dtype=np.int64))
        feats.append(idx[order])
        acts.append(np.asarray(val, dtype=np.float32)[order])
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
    return pa.table(
        {
            "example_id": cat(ids, np.int64),
            "feature_id": cat(feats, np.int32),
            "activation": cat(acts, np.float32),
        },
        schema=LATENTS_SCHEMA,
    )


def committed_chunks(store: FeatureStore) -> set[int]:
    """Indices of the chunks already stored."""
    with store.read("reading ingest progress") as cur:
        return {r[0] for r in cur.execute("SELECT chunk_index FROM ingest_chunks").fetchall()}


def write_chunk(store: FeatureStore, chunk: Chunk, data: ChunkData) -> bool:
    """Commit one chunk atomically; False (and nothing written) if it is already stored."""
    data.check_ids(chunk)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with store.write(f"committing chunk {chunk.index}") as cur:
        if fetch_one(cur, "SELECT 1 FROM ingest_chunks WHERE chunk_index = ?", [chunk.index]):
            return False
        insert_arrow(cur, "examples", data.examples)
        insert_arrow(cur, "latents", data.latents)
        cur.execute(
            "INSERT INTO ingest_chunks VALUES (?, ?, ?, ?, ?)",
            [chunk.index, chunk.start, chunk.size, data.latents.num_rows, now],
        )
    return True


def insert_arrow(cur, table: str, rows: pa.Table) -> None:
    """``INSERT INTO table SELECT * FROM rows`` through a registered Arrow view."""
    view = f"_incoming_{table}"
    columns = ", ".join(rows.column_names)
    cur.register(view, rows)
    try:
        cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view}")
    finally:
        cur.unregister(view)
