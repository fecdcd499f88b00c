"""Chunk results as Arrow tables, and the one-transaction chunk commit.

A chunk's examples, its latents and its row in ``ingest_chunks`` commit in a
single transaction, so after a crash a chunk is either fully stored or absent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.connection import Connection
from feature_store.errors import StoreError
from feature_store.evidence import ChunkEvidence, insert_evidence
from feature_store.plan import Chunk
from feature_store.sqlutil import fetch_one, insert_arrow
from sarm.latents import SparseLatents
from sarm.types import Response

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
    evidence: ChunkEvidence | None = None

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
    def from_results(
        cls,
        examples: Sequence[Response],
        latents: SparseLatents,
        rewards: np.ndarray,
        n_tokens: np.ndarray,
        truncated: np.ndarray,
    ) -> ChunkData:
        """Lay a chunk's model results out as rows (latents sorted by feature id)."""
        n = len(examples)
        if not (len(rewards) == len(n_tokens) == len(truncated) == latents.n == n):
            raise StoreError(f"the model returned results for {latents.n} of {n} examples")
        bad = ~np.isfinite(np.asarray(rewards, dtype=np.float64))
        if bad.any():
            ex = examples[int(np.argmax(bad))]
            raise StoreError(
                f"example {ex.example_id} (group {ex.group_id!r}, {ex.role} "
                f"{ex.response_index}): non-finite reward {rewards[int(np.argmax(bad))]}"
            )
        return cls(
            _examples_table(examples, rewards, n_tokens, truncated),
            _latents_table(examples, latents),
        )


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


def _latents_table(examples: Sequence[Response], latents: SparseLatents) -> pa.Table:
    ids = np.array([e.example_id for e in examples], dtype=np.int64)[latents.row_ids]
    order = np.lexsort((latents.indices, latents.row_ids))
    return pa.table(
        {
            "example_id": ids[order],
            "feature_id": latents.indices[order],
            "activation": latents.values[order],
        },
        schema=LATENTS_SCHEMA,
    )


def chunk_responses(examples: pa.Table) -> list[Response]:
    """The :class:`Response` of each row of a chunk's examples (their content, not scores)."""
    names = [f.name for f in fields(Response) if f.name != "prompt_messages"]
    return [
        Response(
            **{k: row[k] for k in names}, prompt_messages=tuple(json.loads(row["prompt_messages"]))
        )
        for row in examples.select([*names, "prompt_messages"]).to_pylist()
    ]


def committed_chunks(conn: Connection) -> set[int]:
    """Indices of the chunks already stored."""
    with conn.read("reading ingest progress") as cur:
        return {r[0] for r in cur.execute("SELECT chunk_index FROM ingest_chunks").fetchall()}


def write_chunk(conn: Connection, chunk: Chunk, data: ChunkData) -> bool:
    """Commit one chunk atomically; False (and nothing written) if it is already stored."""
    data.check_ids(chunk)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with conn.write(f"committing chunk {chunk.index}") as cur:
        if fetch_one(cur, "SELECT 1 FROM ingest_chunks WHERE chunk_index = ?", [chunk.index]):
            return False
        insert_arrow(cur, "examples", data.examples)
        insert_arrow(cur, "latents", data.latents)
        if data.evidence is not None:
            insert_evidence(cur, chunk.index, data.evidence)
        cur.execute(
            "INSERT INTO ingest_chunks VALUES (?, ?, ?, ?, ?)",
            [chunk.index, chunk.start, chunk.size, data.latents.num_rows, now],
        )
    return True
