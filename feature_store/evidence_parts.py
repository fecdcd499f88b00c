"""Feature evidence and decoder views in a parts directory, so sharded and Ray stores get them too.

A chunk's evidence (:class:`~feature_store.evidence.ChunkEvidence`, from the
same forward pass as its latents) travels as three more part files, written
before the chunk's latents and examples so that a present examples file still
means a complete chunk: ``chunk-NNNNNN.evidence-responses.parquet``,
``...evidence-windows...`` and ``...evidence-counts...``. The pass totals
(tokens, responses, window) ride in the responses part's metadata. The
manifest records the evidence window (``null``: none kept), so every worker
agrees and the merge requires the parts. The decoder views depend on the model
only: ``decoder.parquet``, written by the first worker that finds it missing,
and loaded by the merge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.binding import Binding
from feature_store.decoder_views import DECODER_SCHEMA, decoder_views
from feature_store.evidence import ChunkEvidence
from feature_store.part_files import part_path, read_part, refused, run_identity, write_part
from feature_store.plan import Chunk
from sarm.explain.evidence import COUNTS_SCHEMA, N_BINS, RESPONSES_SCHEMA, WINDOWS_SCHEMA

__all__ = [
    "DECODER_PART",
    "EVIDENCE_KINDS",
    "read_decoder_part",
    "read_evidence_parts",
    "write_decoder_part",
    "write_evidence_parts",
]

#: part kind -> schema, in the order they are written
EVIDENCE_KINDS = {
    "evidence-windows": WINDOWS_SCHEMA,
    "evidence-counts": COUNTS_SCHEMA,
    "evidence-responses": RESPONSES_SCHEMA,
}
DECODER_PART = "decoder.parquet"


def write_evidence_parts(
    parts: Path, chunk_index: int, evidence: ChunkEvidence, binding: Binding
) -> None:
    """A chunk's three evidence parts (before its latents and examples)."""
    identity = run_identity(binding)
    totals = evidence.totals()
    tables = {
        "evidence-windows": evidence.windows,
        "evidence-counts": evidence.counts,
        "evidence-responses": evidence.responses,
    }
    for kind, table in tables.items():
        extra = totals if kind == "evidence-responses" else None
        write_part(table, part_path(parts, chunk_index, kind), identity, extra)


def read_evidence_parts(parts: Path, chunk: Chunk, binding: Binding, window: int) -> ChunkEvidence:
    """A chunk's evidence, verified: its responses, features, values and totals."""
    tables, totals = {}, {}
    for kind, schema in EVIDENCE_KINDS.items():
        path = part_path(parts, chunk.index, kind)
        if not path.exists():
            raise refused(path, "it is missing, and the manifest says this run keeps evidence")
        tables[kind], extra = read_part(path, schema, binding)
        totals |= extra
    _verify(parts, chunk, binding, window, tables, totals)
    return ChunkEvidence.from_tables(
        tables["evidence-responses"],
        tables["evidence-windows"],
        tables["evidence-counts"],
        totals,
    )


def _verify(parts: Path, chunk: Chunk, binding: Binding, window: int, tables, totals) -> None:
    def path(kind: str) -> Path:
        return part_path(parts, chunk.index, kind)

    ids = tables["evidence-responses"]["example_id"].to_numpy()
    if not np.array_equal(ids, np.arange(chunk.start, chunk.stop)):
        raise refused(
            path("evidence-responses"),
            f"it holds {len(ids)} responses, expected ids {chunk.start}..{chunk.stop - 1} in order",
        )
    expected = {"n_responses": chunk.size, "window": window}
    for key, want in expected.items():
        if totals.get(key) != want:
            raise refused(
                path("evidence-responses"), f"its {key} is {totals.get(key)!r}, not {want}"
            )
    if not isinstance(totals.get("n_tokens"), int) or totals["n_tokens"] < 0:
        raise refused(path("evidence-responses"), f"its n_tokens is {totals.get('n_tokens')!r}")
    windows = tables["evidence-windows"]
    _check_ids(path("evidence-windows"), windows, chunk, binding.d_sae)
    values = np.concatenate(
        [windows["peak_activation"].to_numpy(), pc.list_flatten(windows["activations"]).to_numpy()]
    )
    if not np.isfinite(values).all():
        raise refused(path("evidence-windows"), "it has non-finite activations")
    counts = tables["evidence-counts"]
    _check_ids(path("evidence-counts"), counts, None, binding.d_sae)
    lengths = pc.list_value_length(counts["histogram"]).to_numpy()
    negative = any(
        pc.min(counts[c]).as_py() < 0 for c in ("active_tokens", "active_responses") if len(counts)
    )
    if negative or (lengths != N_BINS).any():
        raise refused(path("evidence-counts"), f"its counts are negative or not {N_BINS} bins")


def _check_ids(path: Path, table: pa.Table, chunk: Chunk | None, d_sae: int) -> None:
    feats = table["feature_id"].to_numpy()
    if feats.size and (feats.min() < 0 or feats.max() >= d_sae):
        raise refused(path, f"it has feature ids outside 0..{d_sae - 1}")
    if chunk is None:
        return
    rows = table["example_id"].to_numpy()
    if rows.size and (rows.min() < chunk.start or rows.max() >= chunk.stop):
        raise refused(path, f"it has rows of examples outside {chunk.start}..{chunk.stop - 1}")


def write_decoder_part(parts: Path, model, binding: Binding) -> None:
    """``decoder.parquet`` from ``model``, unless a worker already wrote it."""
    path = parts / DECODER_PART
    if path.exists():
        return
    table, note = decoder_views(model)
    write_part(table, path, run_identity(binding), {"note": note})


def read_decoder_part(parts: Path, binding: Binding) -> tuple[pa.Table, str] | None:
    """The decoder views and their note, or None when the run wrote none."""
    path = parts / DECODER_PART
    if not path.exists():
        return None
    table, extra = read_part(path, DECODER_SCHEMA, binding)
    feats = table["feature_id"].to_numpy()
    if feats.size and (feats.min() < 0 or feats.max() >= binding.d_sae):
        raise refused(path, f"it has feature ids outside 0..{binding.d_sae - 1}")
    return table, str(extra.get("note", ""))
