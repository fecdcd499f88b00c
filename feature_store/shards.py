"""Scale-out: n workers each index a slice into Parquet parts; one merge builds the store.

Worker ``i/n`` computes the chunks with ``chunk.index % n == i`` into a parts
directory (shared, or copied together afterwards). Per chunk it writes
``chunk-NNNNNN.latents.parquet`` then ``chunk-NNNNNN.examples.parquet``, each
to a temporary name first and renamed, so a present examples file means a
complete chunk and a killed worker simply resumes. ``manifest.json`` and
``head.parquet`` record the binding; every worker must agree on them.
``merge_parts`` commits the chunks in order through the same code path as a
single-worker ingest, so the merged store equals a single-worker run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from feature_store.binding import Binding, bind
from feature_store.chunks import EXAMPLES_SCHEMA, LATENTS_SCHEMA, ChunkData, write_chunk
from feature_store.connection import Connection
from feature_store.errors import StoreError, StoreMismatchError
from feature_store.ingest import compute_chunk, finish, pending_chunks
from feature_store.plan import Chunk, Shard, data_fingerprint, make_chunks
from feature_store.source import LatentSource
from sarm.constants import SHARD_HEAD_FILE, SHARD_MANIFEST_FILE
from sarm.types import PreferenceGroup, responses_of

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1


def _part(parts: Path, index: int, kind: str) -> Path:
    return parts / f"chunk-{index:06d}.{kind}.parquet"


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(parts: Path, binding: Binding) -> None:
    """Record the binding in ``parts``, or check it against the one already there."""
    manifest = {"format": FORMAT_VERSION, **binding.meta()}
    path = parts / SHARD_MANIFEST_FILE
    if path.exists():
        existing = read_binding(parts)
        theirs = {k: v for k, v in existing.meta().items() if k != "source"}
        ours = {k: v for k, v in binding.meta().items() if k != "source"}
        if theirs != ours or not existing.same_head(binding):
            diff = sorted(k for k in ours if theirs.get(k) != ours[k]) or ["head weights"]
            raise StoreMismatchError(f"{path} was written for a different run (differs in {diff})")
        return
    parts.mkdir(parents=True, exist_ok=True)
    _atomic_parquet(binding.head_table(), parts / SHARD_HEAD_FILE)
    _atomic_text(json.dumps(manifest, indent=2), path)


def read_binding(parts: Path) -> Binding:
    """The binding recorded by the workers that wrote ``parts``."""
    path = parts / SHARD_MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: is {parts} a parts directory written by `sarm index --shard`?"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_VERSION:
        raise StoreError(f"{path}: unsupported parts format {manifest.get('format')!r}")
    head = pq.read_table(parts / SHARD_HEAD_FILE)
    order = np.argsort(head["feature_id"].to_numpy())
    return Binding.from_meta(manifest, head["weight"].to_numpy()[order])


def ingest_shard(
    sarm: LatentSource,
    groups: Sequence[PreferenceGroup],
    parts: str | Path,
    shard: Shard,
    *,
    batch_size: int = 8,
    chunk_size: int = 256,
    source: str = "",
    progress: bool = True,
) -> int:
    """Compute this worker's chunks into ``parts``; returns how many it computed now."""
    parts = Path(parts)
    plan = responses_of(groups)
    if not plan:
        raise ValueError("the dataset has no examples to index")
    binding = Binding.from_source(sarm, data_fingerprint(plan), len(plan), chunk_size, source)
    write_manifest(parts, binding)
    mine = [c for c in make_chunks(len(plan), chunk_size) if shard.owns(c)]
    todo = [c for c in mine if not _part(parts, c.index, "examples").exists()]
    with tqdm(
        total=sum(c.size for c in mine),
        initial=sum(c.size for c in mine) - sum(c.size for c in todo),
        unit="ex",
        desc=f"shard {shard}",
        disable=not progress,
    ) as bar:
        for chunk in todo:
            data = compute_chunk(sarm, plan[chunk.start : chunk.stop], binding, batch_size)
            _atomic_parquet(data.latents, _part(parts, chunk.index, "latents"))
            _atomic_parquet(data.examples, _part(parts, chunk.index, "examples"))
            bar.update(chunk.size)
    return len(todo)


def _read_chunk(parts: Path, chunk: Chunk) -> ChunkData:
    examples = pq.read_table(_part(parts, chunk.index, "examples"), schema=EXAMPLES_SCHEMA)
    latents = pq.read_table(_part(parts, chunk.index, "latents"), schema=LATENTS_SCHEMA)
    return ChunkData(examples, latents)


def merge_parts(
    conn: Connection, parts: str | Path, *, top_n: int = 20, progress: bool = True
) -> int:
    """Load every chunk in ``parts`` into ``store`` (resumable); returns chunks merged now.

    Refuses (and writes nothing) while any chunk is missing.
    """
    parts = Path(parts)
    binding = read_binding(parts)
    chunks = make_chunks(binding.n_examples, binding.chunk_size)
    missing = [c.index for c in chunks if not _part(parts, c.index, "examples").exists()]
    if missing:
        raise StoreError(
            f"{parts} lacks {len(missing)} of {len(chunks)} chunks (first: {missing[:10]}); "
            "wait for every shard worker to finish"
        )
    binding = bind(conn, binding)
    todo = pending_chunks(conn, binding)
    for chunk in tqdm(todo, unit="chunk", desc="merging", disable=not progress):
        write_chunk(conn, chunk, _read_chunk(parts, chunk))
    finish(conn, binding, top_n)
    return len(todo)
