"""Scale-out: n workers each index a slice into Parquet parts; one merge builds the store.

Worker ``i/n`` computes the chunks with ``chunk.index % n == i`` into a parts
directory (shared, or copied together afterwards). Per chunk it writes its
evidence parts when the run keeps evidence (:mod:`feature_store.evidence_parts`),
then ``chunk-NNNNNN.latents.parquet``, then ``chunk-NNNNNN.examples.parquet``,
each to a temporary name first and renamed, so a present examples file means
a complete chunk and a killed worker simply resumes. ``manifest.json`` and
``head.parquet`` record the binding; every worker must agree on them.
``merge_parts`` commits the chunks in order through the same code path as a
single-worker ingest, so the merged store equals a single-worker run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from feature_store.binding import Binding, bind, stored_binding
from feature_store.chunks import (
    EXAMPLES_SCHEMA,
    LATENTS_SCHEMA,
    ChunkData,
    chunk_responses,
    write_chunk,
)
from feature_store.connection import Connection
from feature_store.decoder_views import store_decoder_views
from feature_store.errors import PartError, StoreError, StoreMismatchError
from feature_store.evidence_parts import (
    read_decoder_part,
    read_evidence_parts,
    write_evidence_parts,
)
from feature_store.ingest import compute_chunk, finish, pending_chunks
from feature_store.part_files import (
    part_path,
    read_part,
    refused,
    run_identity,
    write_part,
    write_text,
)
from feature_store.plan import Chunk, Shard, data_fingerprint, make_chunks
from feature_store.source import LatentSource
from sarm.constants import SHARD_HEAD_FILE, SHARD_MANIFEST_FILE
from sarm.explain.evidence import EvidenceSpec
from sarm.latents import SparseLatents
from sarm.types import PreferenceGroup, Response, responses_of

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
#: stored rewards must equal the head applied to the stored latents within this
REWARD_ATOL = REWARD_RTOL = 1e-5
#: manifest key: the evidence window the workers keep (null: none)
EVIDENCE_KEY = "evidence_window"


def write_manifest(parts: Path, binding: Binding, evidence_window: int | None = None) -> None:
    """Record the binding (and the evidence window, None: no evidence) in ``parts``,
    or check them against the ones already there."""
    manifest = {"format": FORMAT_VERSION, **binding.meta(), EVIDENCE_KEY: evidence_window}
    path = parts / SHARD_MANIFEST_FILE
    if path.exists():
        existing = read_binding(parts)
        theirs = {k: v for k, v in existing.meta().items() if k != "source"}
        ours = {k: v for k, v in binding.meta().items() if k != "source"}
        theirs[EVIDENCE_KEY], ours[EVIDENCE_KEY] = read_evidence_window(parts), evidence_window
        if theirs != ours or not existing.same_head(binding):
            diff = sorted(k for k in ours if theirs.get(k) != ours[k]) or ["head weights"]
            raise StoreMismatchError(f"{path} was written for a different run (differs in {diff})")
        return
    parts.mkdir(parents=True, exist_ok=True)
    write_part(binding.head_table(), parts / SHARD_HEAD_FILE)
    write_text(json.dumps(manifest, indent=2), path)


def read_binding(parts: Path) -> Binding:
    """The binding recorded by the workers that wrote ``parts``."""
    path = parts / SHARD_MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: is {parts} a parts directory written by `sarm index --shard`?"
        )
    manifest = _manifest(path)
    head = pq.read_table(parts / SHARD_HEAD_FILE)
    order = np.argsort(head["feature_id"].to_numpy())
    meta = {k: v for k, v in manifest.items() if k != EVIDENCE_KEY}
    return Binding.from_meta(meta, head["weight"].to_numpy()[order])


def read_evidence_window(parts: Path) -> int | None:
    """The evidence window the workers keep (None: they keep no evidence)."""
    window = _manifest(parts / SHARD_MANIFEST_FILE).get(EVIDENCE_KEY)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise StoreError(f"{parts / SHARD_MANIFEST_FILE}: {EVIDENCE_KEY} must be an int or null")
    return window


def _manifest(path: Path) -> dict:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_VERSION:
        raise StoreError(f"{path}: unsupported parts format {manifest.get('format')!r}")
    return manifest


def plan_parts(
    sarm: LatentSource,
    groups: Sequence[PreferenceGroup],
    parts: Path,
    chunk_size: int,
    source: str,
    evidence: EvidenceSpec | None = None,
) -> tuple[list[Response], Binding, list[Chunk]]:
    """The responses, binding and chunks of a parts run (sharded or Ray); writes its manifest."""
    plan = responses_of(groups)
    if not plan:
        raise ValueError("the dataset has no examples to index")
    binding = Binding.from_source(sarm, data_fingerprint(plan), len(plan), chunk_size, source)
    write_manifest(parts, binding, None if evidence is None else evidence.window)
    return plan, binding, make_chunks(len(plan), chunk_size)


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
    evidence: EvidenceSpec | None = None,
) -> int:
    """Compute this worker's chunks into ``parts``; returns how many it computed now.

    ``evidence``: keep feature evidence from the same forward pass, as a
    single-process ingest does (every worker of a run must agree).
    """
    parts = Path(parts)
    plan, binding, chunks = plan_parts(sarm, groups, parts, chunk_size, source, evidence)
    mine = [c for c in chunks if shard.owns(c)]
    todo = missing_parts(parts, mine)
    with tqdm(
        total=sum(c.size for c in mine),
        initial=sum(c.size for c in mine) - sum(c.size for c in todo),
        unit="ex",
        desc=f"shard {shard}",
        disable=not progress,
    ) as bar:
        for chunk in todo:
            data = compute_chunk(
                sarm, plan[chunk.start : chunk.stop], binding, batch_size, evidence
            )
            write_chunk_parts(parts, chunk, data, binding)
            bar.update(chunk.size)
    return len(todo)


def missing_parts(parts: Path, chunks: Sequence[Chunk]) -> list[Chunk]:
    """The chunks of ``chunks`` whose parts are not (completely) in ``parts`` yet."""
    return [c for c in chunks if not part_path(parts, c.index, "examples").exists()]


def write_chunk_parts(parts: Path, chunk: Chunk, data: ChunkData, binding: Binding) -> None:
    """A computed chunk's part files (examples last: a present examples file means done)."""
    data.check_ids(chunk)
    if data.evidence is not None:
        write_evidence_parts(parts, chunk.index, data.evidence, binding)
    identity = run_identity(binding)
    write_part(data.latents, part_path(parts, chunk.index, "latents"), identity)
    write_part(data.examples, part_path(parts, chunk.index, "examples"), identity)


def _read_chunk(
    parts: Path, chunk: Chunk, binding: Binding, evidence_window: int | None = None
) -> ChunkData:
    """A chunk's parts, verified against the binding (see :func:`verify_chunk`), with its
    evidence when the run keeps it (``evidence_window``)."""
    examples_path, latents_path = (
        part_path(parts, chunk.index, "examples"),
        part_path(parts, chunk.index, "latents"),
    )
    examples, _ = read_part(examples_path, EXAMPLES_SCHEMA, binding)
    latents, _ = read_part(latents_path, LATENTS_SCHEMA, binding)
    verify_chunk(examples, examples_path, latents, latents_path, chunk, binding)
    if evidence_window is None:
        return ChunkData(examples, latents)
    evidence = read_evidence_parts(parts, chunk, binding, evidence_window)
    return ChunkData(examples, latents, evidence)


def verify_chunk(
    examples: pa.Table,
    examples_path: Path,
    latents: pa.Table,
    latents_path: Path,
    chunk: Chunk,
    binding: Binding,
) -> None:
    """Refuse a chunk whose rows, ids or rewards disagree with the binding.

    Examples must be exactly ``chunk.start .. chunk.stop - 1``; latents must
    belong to those examples, name features of the SAE once each, and be
    finite; every stored reward must equal the ingest head applied to the
    stored latents within ``REWARD_ATOL + REWARD_RTOL * |reward|``.
    """
    ids = examples["example_id"].to_numpy()
    if not np.array_equal(ids, np.arange(chunk.start, chunk.stop)):
        raise refused(
            examples_path,
            f"it holds {len(ids)} examples, expected ids {chunk.start}..{chunk.stop - 1} in order",
        )
    rows = latents["example_id"].to_numpy().astype(np.int64) - chunk.start
    feats = latents["feature_id"].to_numpy().astype(np.int64)
    values = latents["activation"].to_numpy()
    if rows.size and (rows.min() < 0 or rows.max() >= chunk.size):
        raise refused(
            latents_path, f"it has latents of examples outside {chunk.start}..{chunk.stop - 1}"
        )
    if feats.size and (feats.min() < 0 or feats.max() >= binding.d_sae):
        raise refused(latents_path, f"it has feature ids outside 0..{binding.d_sae - 1}")
    if not np.isfinite(values).all():
        raise refused(latents_path, "it has non-finite activations")
    order = np.lexsort((feats, rows))
    rows, feats, values = rows[order], feats[order], values[order]
    if np.any((np.diff(rows) == 0) & (np.diff(feats) == 0)):
        raise refused(latents_path, "it stores a feature twice for one example")
    indptr = np.searchsorted(rows, np.arange(chunk.size + 1))
    recomputed = binding.head.rewards(SparseLatents(indptr, feats, values, binding.d_sae))
    stored = examples["reward"].to_numpy()
    bad = ~(np.abs(stored - recomputed) <= REWARD_ATOL + REWARD_RTOL * np.abs(recomputed))
    if bad.any():
        i = int(np.argmax(bad))
        raise refused(
            examples_path,
            f"{int(bad.sum())} of {chunk.size} stored rewards differ from the head applied to "
            f"the latents in {latents_path.name} (example {chunk.start + i}: stored "
            f"{float(stored[i])!r}, recomputed {float(recomputed[i])!r})",
        )


def _verify_parts(
    parts: Path, chunks: Sequence[Chunk], binding: Binding, evidence_window: int | None
) -> None:
    """Verify every chunk, and that together they hold the manifest's dataset."""

    def contents() -> Iterator[Response]:
        for chunk in chunks:
            yield from chunk_responses(_read_chunk(parts, chunk, binding, evidence_window).examples)

    got = data_fingerprint(contents())
    if got != binding.data_fingerprint:
        raise PartError(
            f"the examples in {parts} have content fingerprint {got}, the manifest "
            f"{binding.data_fingerprint}: a part was edited or comes from another dataset; "
            "nothing was merged"
        )


def merge_parts(
    conn: Connection, parts: str | Path, *, top_n: int = 20, progress: bool = True
) -> int:
    """Load every chunk in ``parts`` into ``store`` (resumable); returns chunks merged now.

    Refuses (and writes nothing) while any chunk is missing, or when any part
    disagrees with the manifest (schema, run identity, ids, rewards, contents).
    """
    parts = Path(parts)
    binding = read_binding(parts)
    chunks = make_chunks(binding.n_examples, binding.chunk_size)
    missing = [c.index for c in missing_parts(parts, chunks)]
    if missing:
        raise StoreError(
            f"{parts} lacks {len(missing)} of {len(chunks)} chunks (first: {missing[:10]}); "
            "wait for every shard worker to finish"
        )
    current = stored_binding(conn)
    if current is not None and not current.same_head(binding):
        raise StoreMismatchError(
            f"the parts in {parts} were scored with a different ingest head than store "
            f"{conn.path}; merge them into a new store"
        )
    window = read_evidence_window(parts)
    _verify_parts(parts, chunks, binding, window)
    decoder = read_decoder_part(parts, binding)
    binding = bind(conn, binding)
    todo = pending_chunks(conn, binding)
    for chunk in tqdm(todo, unit="chunk", desc="merging", disable=not progress):
        write_chunk(conn, chunk, _read_chunk(parts, chunk, binding, window))
    if decoder is not None:
        store_decoder_views(conn, *decoder)
    finish(conn, binding, top_n)
    return len(todo)
