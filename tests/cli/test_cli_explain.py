"""`sarm explain` on a tiny store with evidence: explains, scores, exports, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_tiny_sarm

from feature_store import FeatureStore, ingest
from sarm.explain.evidence import EvidenceSpec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "store"))
from test_store_ingest import make_groups  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "explain"))
from test_llm_errors import _completion, scripted_server  # noqa: E402


def sarm_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-cli")
    model = make_tiny_sarm(root / "m", d_sae=64, k=8)
    with FeatureStore.open(root / "s.duckdb") as store:
        ingest(
            store,
            model,
            make_groups(),
            batch_size=4,
            chunk_size=5,
            top_n=3,
            progress=False,
            evidence=EvidenceSpec(4),
        )
    return root / "s.duckdb"


def test_explain_writes_scored_stats_explanations(store_path):
    out = sarm_cli("explain", "--store", str(store_path), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    with FeatureStore.open(store_path, read_only=True) as store:
        frame = store.explanations()
        firing = int((store.features(limit=None)["n_active"] > 0).sum())
    assert report["n_explained"] == len(frame) == firing
    assert sorted(report["scores"]) == sorted(frame["score"].dropna().tolist())


def test_explain_with_the_ceiling_reports_one_per_explained_feature(store_path):
    out = sarm_cli("explain", "--store", str(store_path), "--ceiling", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    ceilings = report["text_ceilings"]
    assert len(ceilings) == report["n_explained"]
    values = [c for c in ceilings.values() if c is not None]
    assert report["text_ceiling"]["n"] == len(values)
    assert all(0.0 <= c <= 1.0 for c in values)
    text = sarm_cli("explain", "--store", str(store_path), "--ceiling", "--quiet")
    assert "text ceiling" in text.stdout.splitlines()[-1]


def test_explain_refuses_bad_features_and_a_missing_llm_endpoint(store_path):
    bad = sarm_cli("explain", "--store", str(store_path), "--features", "999")
    assert bad.returncode == 2 and "0..63" in bad.stderr
    llm = sarm_cli("explain", "--store", str(store_path), "--explainer", "llm")
    assert llm.returncode == 2 and "--llm-base-url" in llm.stderr
    missing = store_path.with_name("none.duckdb")
    gone = sarm_cli("explain", "--store", str(missing))
    assert gone.returncode == 2 and "no such feature store" in gone.stderr
    assert not missing.exists()  # bad input creates nothing


def test_export_then_import_through_the_cli(store_path, tmp_path):
    sarm_cli("explain", "--store", str(store_path), "--quiet")
    out = sarm_cli("explain", "--store", str(store_path), "--export", str(tmp_path / "e.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "e.json").read_text())
    assert rows and all(r["typeName"].startswith("sarm_") for r in rows)


def test_llm_replies_without_text_are_counted_not_stored(store_path, tmp_path):
    copy = tmp_path / "s.duckdb"
    copy.write_bytes(store_path.read_bytes())  # its own reply cache and annotations
    with scripted_server([(200, {}, _completion(""), 0.0)]) as endpoint:
        out = sarm_cli(
            "explain", "--store", str(copy), "--explainer", "llm", "--top-weight", "3",
            "--llm-base-url", endpoint["url"], "--llm-model", "m", "--json", "--quiet",
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n_without_text"] == 3 == len(endpoint["posts"])  # asked, nothing written
    assert report["n_explained"] == report["n_scored"] == 0
    with FeatureStore.open(copy, read_only=True) as store:
        frame = store.explanations()
    assert not frame["source"].astype(str).str.startswith("llm:").any()
