"""The default's shipped evidence: checked against the shipped pooled latents before use."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_store import FeatureStore
from sarm import cachedir
from sarm.errors import CheckpointError
from sarm.head import Head
from sarm.types import responses_of
from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows
from workflows.default_sarm.evidence_asset import (
    EVIDENCE_DIR,
    _sha256,
    load_shipped_evidence,
    shipped_evidence_present,
)
from workflows.default_sarm.store import audit_groups


@pytest.fixture(scope="module")
def shipped():
    root = cachedir.shipped_default_dir()
    if not shipped_evidence_present(root):
        pytest.skip("no shipped evidence in this checkout")
    head = Head.load(root / "head.safetensors")
    return root, AuditRows.read(root / AUDIT_FILE, head)


def _copy(root, tmp_path):
    target = tmp_path / "default"
    shutil.copytree(root, target)
    return target, json.loads((target / "manifest.json").read_text())


def test_shipped_evidence_loads_and_matches_the_pooled_latents(shipped, tmp_path):
    root, parts = shipped
    manifest = json.loads((root / "manifest.json").read_text())
    examples = responses_of(audit_groups(limit=40))
    with FeatureStore.open(tmp_path / "s.duckdb") as store:
        n = load_shipped_evidence(store, root, examples, parts, manifest)
        with store.read("t") as cur:
            assert n == cur.execute("SELECT count(*) FROM evidence_responses").fetchall()[0][0]
            windows = cur.execute("SELECT count(*) FROM evidence_windows").fetchall()[0][0]
    assert windows > 0


def test_a_window_that_disagrees_with_the_pooled_latent_is_refused(shipped, tmp_path):
    root, parts = shipped
    target, manifest = _copy(root, tmp_path)
    path = target / EVIDENCE_DIR / "windows.parquet"
    table = pq.read_table(path)
    peaks = table["peak_activation"].to_numpy().copy()
    peaks[0] = -1e6  # below its pooled latent: not this model's evidence
    table = table.set_column(
        table.schema.get_field_index("peak_activation"),
        "peak_activation",
        pa.array(peaks, pa.float32()),
    )
    pq.write_table(table, path)
    manifest["evidence"]["windows"]["sha256"] = _sha256(path)
    with FeatureStore.open(tmp_path / "s.duckdb") as store, pytest.raises(CheckpointError) as err:
        load_shipped_evidence(store, target, [], parts, manifest)
    assert str(path) in str(err.value) and "row 0" in str(err.value)


def test_a_file_that_differs_from_the_manifest_is_refused(shipped, tmp_path):
    root, parts = shipped
    target, manifest = _copy(root, tmp_path)
    path = target / EVIDENCE_DIR / "counts.parquet"
    path.write_bytes(path.read_bytes() + b"x")
    with FeatureStore.open(tmp_path / "s.duckdb") as store, pytest.raises(CheckpointError) as err:
        load_shipped_evidence(store, target, [], parts, manifest)
    assert str(path) in str(err.value) and "sha256" in str(err.value)


def test_evidence_the_manifest_does_not_record_is_refused(shipped, tmp_path):
    root, parts = shipped
    target, manifest = _copy(root, tmp_path)
    del manifest["evidence"]
    with FeatureStore.open(tmp_path / "s.duckdb") as store:
        with pytest.raises(CheckpointError) as err:
            load_shipped_evidence(store, target, [], parts, manifest)
        with store.read("t") as cur:
            assert cur.execute("SELECT count(*) FROM evidence_windows").fetchall()[0][0] == 0
    assert "records no sha256" in str(err.value) and "evidence." in str(err.value)


def test_a_head_refit_keeps_the_evidence_record(tmp_path):
    from workflows.default_sarm.build import _with_kept_entries

    previous = tmp_path / "manifest.json"
    record = {"windows": {"sha256": "ab", "bytes": 3}}
    previous.write_text(json.dumps({"evidence": record, "head": {"old": 1}}))
    kept = _with_kept_entries({"head": {"new": 2}}, previous)
    assert kept == {"head": {"new": 2}, "evidence": record}
    assert _with_kept_entries({"head": 1}, tmp_path / "absent.json") == {"head": 1}


def test_the_default_store_ships_explanations_with_their_text_ceilings(shipped, tmp_path):
    from feature_store.explanations import split_windows
    from sarm.explain.ceiling import text_ceiling
    from workflows.default_sarm.store import build_default_store

    build_default_store(tmp_path / "s.duckdb", progress=False, limit=60)
    with FeatureStore.open(tmp_path / "s.duckdb", read_only=True) as store:
        shown = store.display_explanations().set_index("feature")
        measured = shown["ceiling"].dropna()
        assert len(measured) > 0 and measured.between(0.0, 1.0).all()
        fid = int(measured.index[0])
        # the stored figure is the ceiling of the store's own contrast and matched windows
        train = split_windows(store, "contrast", [fid])[fid]
        test = split_windows(store, "matched", [fid])[fid]
    assert {w.active for w in train} == {w.active for w in test} == {True, False}
    assert measured.iloc[0] == pytest.approx(text_ceiling(train, test))
