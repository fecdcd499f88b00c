"""Part files of a parts directory (sharded and Ray indexing): names, atomic writes, checked reads.

Every part is written to a temporary name and renamed, so a part that exists is
whole. Each carries the identity of the run that wrote it (model fingerprint
and dataset) in its Parquet metadata, and optionally a few more fields
(``extra``); a read checks the schema and the identity against the manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.binding import Binding
from feature_store.errors import PartError

#: Parquet metadata key of a part: the identity of the run that wrote it
PART_META_KEY = b"sarm.part"
#: Parquet metadata key of a part's extra fields (JSON)
EXTRA_META_KEY = b"sarm.extra"


def part_path(parts: Path, index: int, kind: str) -> Path:
    """Chunk ``index``'s part of ``kind`` (``examples``, ``latents``, ``evidence-...``)."""
    return parts / f"chunk-{index:06d}.{kind}.parquet"


def write_part(
    table: pa.Table,
    path: Path,
    identity: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """Write ``table`` to ``path`` atomically, with the run ``identity`` and ``extra`` fields."""
    meta = {}
    if identity is not None:
        meta[PART_META_KEY] = json.dumps(identity).encode()
    if extra is not None:
        meta[EXTRA_META_KEY] = json.dumps(extra).encode()
    if meta:
        table = table.replace_schema_metadata(meta)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_identity(binding: Binding) -> dict[str, str]:
    """What each part records about its run: model fingerprint and dataset."""
    keys = ("data_fingerprint", "n_examples", "chunk_size", "d_sae", "head_bias")
    meta = binding.meta()
    return {**binding.fingerprint, **{k: meta[k] for k in keys}}


def refused(path: Path, what: str) -> PartError:
    """The error for a part the merge will not take (nothing is merged)."""
    return PartError(
        f"shard part {path} is refused: {what}; nothing was merged. Delete the chunk's part "
        "files and rerun the worker that owns it (`sarm index --shard i/n`, or the Ray run)"
    )


def read_part(path: Path, schema: pa.Schema, binding: Binding) -> tuple[pa.Table, dict]:
    """One part file and its extra fields, with its schema and its run identity checked."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise refused(path, f"it cannot be read as Parquet ({exc})") from exc
    if not table.schema.equals(schema):
        got = {f.name: str(f.type) for f in table.schema}
        want = {f.name: str(f.type) for f in schema}
        diff = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
        detail = ", ".join(
            f"{k}: {got.get(k, 'missing')} (expected {want.get(k, 'none')})" for k in diff
        )
        raise refused(path, f"its columns differ from the expected schema ({detail or 'order'})")
    meta = table.schema.metadata or {}
    identity = meta.get(PART_META_KEY)
    if identity is not None:
        theirs = _json(path, identity, "run identity")
        ours = run_identity(binding)
        diff = sorted(k for k in ours.keys() | theirs.keys() if theirs.get(k) != ours.get(k))
        if diff:
            raise refused(
                path, f"it was written by a different run than the manifest (differs in {diff})"
            )
    extra = _json(path, meta[EXTRA_META_KEY], "extra fields") if EXTRA_META_KEY in meta else {}
    return table.replace_schema_metadata(None), extra


def _json(path: Path, raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise refused(path, f"its {what}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise refused(path, f"its {what}: not a JSON object")
    return value
