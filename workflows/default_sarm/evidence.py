"""The default audit set's feature evidence: one resumable forward pass, then a pruned asset.

``sarm build-default`` indexes shipped pooled latents without running the
backbone, so the evidence its feature pages read ships too. :func:`evidence_pass`
runs the default SARM over the distinct audit conversations with an
:class:`~sarm.explain.evidence.EvidenceSpec` (the same code path as ``sarm index``),
writing one part per ``part_size`` conversations under
``$SARM_CACHE_DIR/default-build/evidence``; a killed run resumes at the first
missing part. Parts are keyed by :func:`conversation_key`. Conversations are taken
in a seeded random order, so the parts written so far are always a uniform sample
of the audit set (on a loaded 2-core machine the whole pass takes hours).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from sarm import cachedir
from sarm.explain.evidence import (
    N_BINS,
    EvidenceSpec,
    TokenCounters,
    counters_table,
    evidence_tables,
)
from workflows.default_sarm.audit_parts import conversation_key

logger = logging.getLogger(__name__)

PART_SIZE = 64
ORDER_SEED = 0
DEFAULT_SPEC = EvidenceSpec()


def evidence_cache_dir() -> Path:
    return cachedir.cache_dir() / "default-build" / "evidence"


def _part_paths(root: Path, index: int) -> dict[str, Path]:
    stem = f"part-{index:05d}"
    return {
        name: root / f"{stem}.{name}.parquet" for name in ("keys", "responses", "windows", "counts")
    }


def evidence_pass(
    model,
    conversations: list,
    root: Path | None = None,
    spec: EvidenceSpec = DEFAULT_SPEC,
    part_size: int = PART_SIZE,
    progress: bool = True,
) -> Path:
    """Evidence of every conversation, part by part (parts already written are skipped)."""
    root = root or evidence_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.json").write_text(json.dumps({"window": spec.window, "n": len(conversations)}))
    starts = range(0, len(conversations), part_size)
    for index, start in enumerate(tqdm(starts, desc="evidence", unit="part", disable=not progress)):
        paths = _part_paths(root, index)
        if paths["counts"].is_file():
            continue
        convs = conversations[start : start + part_size]
        pooled = model.pooled_latents(convs, evidence=spec)
        rows = np.arange(start, start + len(convs), dtype=np.int64)
        responses, windows = evidence_tables(rows, pooled.evidence)
        keys = pa.table(
            {
                "row": rows,
                "key": [conversation_key(c) for c in convs],
                "n_tokens": pooled.n_tokens,
                "n_response_tokens": [len(e.tokens) for e in pooled.evidence],
            }
        )
        counts = counters_table(pooled.counters).replace_schema_metadata(
            {"n_tokens": str(pooled.counters.n_tokens), "n_responses": str(len(convs))}
        )
        for name, table in (
            ("keys", keys),
            ("responses", responses),
            ("windows", windows),
            ("counts", counts),  # written last: its presence marks the part done
        ):
            tmp = paths[name].with_suffix(".tmp")
            pq.write_table(table, tmp, compression="zstd")
            tmp.replace(paths[name])
    return root


def read_parts(root: Path, name: str) -> pa.Table:
    """Every complete part's ``name`` table (its counts file, written last, exists), in order."""
    files = [
        f
        for f in sorted(root.glob(f"part-*.{name}.parquet"))
        if (root / f"{f.name.split('.')[0]}.counts.parquet").is_file()
    ]
    return pa.concat_tables([pq.read_table(f) for f in files])


def total_counters(root: Path, d_sae: int) -> TokenCounters:
    """The token counters of every part, added up."""
    total = TokenCounters(d_sae)
    for path in sorted(root.glob("part-*.counts.parquet")):
        table = pq.read_table(path)
        meta = table.schema.metadata
        part = TokenCounters(d_sae, int(meta[b"n_tokens"]), int(meta[b"n_responses"]))
        fids = table["feature_id"].to_numpy()
        part.active_tokens[fids] = table["active_tokens"].to_numpy()
        part.active_responses[fids] = table["active_responses"].to_numpy()
        hist = np.array(table["histogram"].to_pylist(), np.int64).reshape(-1, N_BINS)
        part.histogram[fids] = hist
        total = total.merge(part)
    return total
