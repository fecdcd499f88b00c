"""Sharded (and Ray) indexing keeps the same feature evidence and decoder views as one process.

The reference is a single-process ``ingest`` with evidence plus
``write_decoder_views``; the parts path must give the same evidence rows,
aggregates and decoder views, and the merge must refuse evidence parts that are
missing or wrong, writing nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_tiny_sarm
from test_store_shards import CHUNK, make_groups

from feature_store import (
    FeatureStore,
    PartError,
    Shard,
    StoreMismatchError,
    ingest,
    ingest_shard,
    merge_parts,
    read_binding,
    write_decoder_part,
)
from feature_store.decoder_views import write_decoder_views
from feature_store.part_files import part_path
from sarm.checkpoints import save_sarm
from sarm.data import save_jsonl
from sarm.explain.evidence import EvidenceSpec
from workflows.cli import main as sarm_main

WINDOW = 3
#: queries whose rows must be equal between two stores of the same data and model
EVIDENCE_QUERIES = (
    "SELECT * FROM evidence_responses ORDER BY example_id",
    "SELECT * FROM evidence_windows ORDER BY example_id, feature_id",
    "SELECT * FROM evidence_counts ORDER BY chunk_index, feature_id",
    "SELECT * FROM evidence_chunks ORDER BY chunk_index",
    "SELECT * FROM feature_density ORDER BY feature_id",
    "SELECT * FROM feature_contrastive ORDER BY ALL",
    "SELECT * FROM feature_decoder ORDER BY feature_id, kind, rank",
    "SELECT value FROM meta WHERE key = 'decoder_note'",
)


def evidence_rows(path: Path) -> dict[str, list]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {sql: con.execute(sql).fetchall() for sql in EVIDENCE_QUERIES}


def assert_same_evidence(got: Path, want: Path, *, atol: float = 0.0) -> None:
    """Same evidence and decoder rows; floats within ``atol`` (0: identical)."""
    a, b = evidence_rows(got), evidence_rows(want)
    assert len(a[EVIDENCE_QUERIES[1]]) > 0 and len(a[EVIDENCE_QUERIES[6]]) > 0
    for sql in EVIDENCE_QUERIES:
        assert len(a[sql]) == len(b[sql]), sql
        for row_a, row_b in zip(a[sql], b[sql], strict=True):
            assert _close(row_a, row_b, atol), f"{sql}: {row_a} != {row_b}"


def _close(x, y, atol: float) -> bool:
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(_close(p, q, atol) for p, q in zip(x, y, strict=True))
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=0, abs_tol=atol) or x == y
    return x == y


@pytest.fixture(scope="module")
def sarm(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=5, d_sae=64, k=8)


def single_process_store(sarm, path: Path, window: int) -> Path:
    """The reference: one process, evidence kept, decoder views written."""
    with FeatureStore.open(path) as store:
        groups = make_groups()
        spec = EvidenceSpec(window)
        ingest(store, sarm, groups, chunk_size=CHUNK, batch_size=4, progress=False, evidence=spec)
        write_decoder_views(store, sarm)
    return path


@pytest.fixture(scope="module")
def single(sarm, tmp_path_factory):
    return single_process_store(sarm, tmp_path_factory.mktemp("single-ev") / "s.duckdb", WINDOW)


def shard_parts(sarm, parts: Path, window: int = WINDOW) -> Path:
    for i in range(2):
        ingest_shard(
            sarm,
            make_groups(),
            parts,
            Shard(i, 2),
            chunk_size=CHUNK,
            batch_size=4,
            progress=False,
            evidence=EvidenceSpec(window),
        )
        write_decoder_part(parts, sarm, read_binding(parts))
    return parts


def test_shards_keep_the_single_process_evidence(sarm, single, tmp_path):
    parts = shard_parts(sarm, tmp_path / "parts")
    assert part_path(parts, 0, "evidence-windows").exists()
    with FeatureStore.open(tmp_path / "merged.duckdb") as store:
        merge_parts(store, parts, progress=False)
    assert_same_evidence(tmp_path / "merged.duckdb", single)


def test_cli_shards_keep_evidence_and_decoder_views(sarm, single, tmp_path, capsys):
    model = save_sarm(sarm, tmp_path / "model")
    data = save_jsonl(make_groups(), tmp_path / "data.jsonl")
    parts = tmp_path / "parts"
    common = ["--chunk-size", str(CHUNK), "--batch-size", "4", "--quiet"]
    for i in range(2):
        argv = ["index", "--model", str(model), "--data", str(data), "--shard", f"{i}/2"]
        assert sarm_main([*argv, "--parts", str(parts), "--evidence-window", "3", *common]) == 0
    store = tmp_path / "merged.duckdb"
    assert sarm_main(["index", "--merge", str(parts), "--store", str(store), "--quiet"]) == 0
    capsys.readouterr()
    assert_same_evidence(store, single)


@pytest.mark.parametrize("damage", ["missing", "non-finite", "other window"])
def test_merge_refuses_bad_evidence_parts_and_writes_nothing(sarm, tmp_path, damage):
    parts = shard_parts(sarm, tmp_path / "parts")
    if damage == "missing":
        part_path(parts, 1, "evidence-windows").unlink()
        match = "is missing, and the manifest says this run keeps evidence"
    elif damage == "non-finite":
        path = part_path(parts, 1, "evidence-windows")
        table = pq.read_table(path)
        rows = table.to_pylist()
        rows[0]["peak_activation"] = float("nan")
        # the same schema and metadata (run identity): only the value is wrong
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
        match = "non-finite activations"
    else:
        manifest = parts / "manifest.json"
        meta = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**meta, "evidence_window": WINDOW + 1}))
        match = "its window is 3, not 4"
    target = tmp_path / "merged.duckdb"
    with FeatureStore.open(target) as store, pytest.raises(PartError, match=match):
        merge_parts(store, parts, progress=False)
    with FeatureStore.open(target, read_only=True) as store:
        assert store.summary()["n_examples"] == 0  # nothing was merged


def test_workers_must_agree_on_the_evidence_window(sarm, tmp_path):
    parts = shard_parts(sarm, tmp_path / "parts")
    with pytest.raises(StoreMismatchError, match="evidence_window"):
        ingest_shard(
            sarm,
            make_groups(),
            parts,
            Shard(0, 2),
            chunk_size=CHUNK,
            progress=False,
            evidence=None,
        )
