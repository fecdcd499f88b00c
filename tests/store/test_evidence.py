"""Feature evidence from the indexing forward pass, against independent per-token recounts.

The reference for every figure is ``SARM.token_latents`` (one conversation at a time,
the whole sequence encoded), never the batched evidence path under test.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_sarm
from test_store_ingest import make_groups

from feature_store import FeatureStore, ingest
from feature_store.annotations import annotations_path
from feature_store.decoder_views import write_decoder_views
from feature_store.explanations import run_stats_explainer, split_windows
from sarm.explain.evidence import HIST_EDGES, EvidenceSpec
from sarm.types import responses_of

WINDOW = 3


@pytest.fixture(scope="module")
def sarm(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("tiny-ev"), seed=0, d_sae=64, k=8)


@pytest.fixture(scope="module")
def indexed(sarm, tmp_path_factory):
    path = tmp_path_factory.mktemp("ev") / "store.duckdb"
    groups = make_groups()
    with FeatureStore.open(path) as store:
        ingest(
            store,
            sarm,
            groups,
            batch_size=3,
            chunk_size=4,
            top_n=3,
            progress=False,
            evidence=EvidenceSpec(WINDOW),
        )
        write_decoder_views(store, sarm)
    store = FeatureStore.open(path, read_only=True)
    yield store, groups, path
    store.close()


def reference(sarm, conversation):
    """Per-token TopK of the response part (tokens from the response start) of one conversation."""
    lat = sarm.token_latents(conversation)
    _, _, start = sarm.backbone.encoder.token_ids_with_start(conversation)
    values, indices = lat.values.numpy()[start:], lat.indices.numpy()[start:]
    return lat.tokens[start:], values, indices


def dense(values, indices, fid):
    return np.array([v[i == fid].sum() for v, i in zip(values, indices, strict=True)])


def test_windows_match_a_per_token_recount(sarm, indexed):
    store, groups, _ = indexed
    responses = responses_of(groups)
    with store.read("t") as cur:
        rows = cur.execute(
            "SELECT example_id, feature_id, peak, peak_activation, start, activations "
            "FROM evidence_windows ORDER BY 1, 2"
        ).fetchall()
        toks = dict(cur.execute("SELECT example_id, tokens FROM evidence_responses").fetchall())
        pooled = {
            (e, f): a
            for e, f, a in cur.execute(
                "SELECT example_id, feature_id, activation FROM latents"
            ).fetchall()
        }
    assert {(e, f) for e, f, *_ in rows} == set(pooled)  # one window per active z_T entry
    for ex, fid, peak, peak_value, start, acts in rows:
        tokens, values, indices = reference(sarm, responses[ex].conversation())
        assert toks[ex] == tokens
        column = dense(values, indices, fid)
        kept = np.where(column != 0, column, -np.inf)
        assert peak == int(kept.argmax())
        assert peak_value == pytest.approx(column[peak], abs=1e-5)
        assert start == max(0, peak - WINDOW)
        np.testing.assert_allclose(acts, column[start : peak + WINDOW + 1], atol=1e-5)
        assert column[-1] == pytest.approx(pooled[(ex, fid)], abs=1e-5)  # the scored token


def test_system_prompt_and_question_are_never_in_a_window(indexed):
    store, groups, _ = indexed
    with store.read("t") as cur:
        toks = dict(cur.execute("SELECT example_id, tokens FROM evidence_responses").fetchall())
    for r in responses_of(groups):
        text = "".join(toks[r.example_id][:-1])  # the last token is the scored end of turn
        assert text.strip() == r.response.strip()
        assert r.prompt not in text


def test_density_and_histogram_match_a_brute_force_recount(sarm, indexed):
    store, groups, _ = indexed
    active, responses_with, hist = Counter(), Counter(), Counter()
    n_tokens = 0
    for r in responses_of(groups):
        _, values, indices = reference(sarm, r.conversation())
        n_tokens += len(values)
        seen = set()
        for v_row, i_row in zip(values, indices, strict=True):
            for v, i in zip(v_row, i_row, strict=True):
                if v != 0:
                    active[int(i)] += 1
                    seen.add(int(i))
                    hist[(int(i), bisect.bisect_right(HIST_EDGES.tolist(), float(v)))] += 1
        responses_with.update(seen)
    with store.read("t") as cur:
        rows = cur.execute(
            "SELECT feature_id, active_tokens, n_tokens, token_fraction, active_responses, "
            "response_fraction, histogram FROM feature_density"
        ).fetchall()
    n_resp = len(responses_of(groups))
    for fid, a, n, frac, ar, rfrac, h in rows:
        assert (a, n, ar) == (active[fid], n_tokens, responses_with[fid])
        assert frac == pytest.approx(active[fid] / n_tokens)
        assert rfrac == pytest.approx(responses_with[fid] / n_resp)
        assert h == [hist[(fid, b)] for b in range(len(h))]


def test_contrastive_counts_match_a_recount_of_the_explanation_windows(sarm, indexed):
    store, groups, _ = indexed
    responses = responses_of(groups)
    windows = split_windows(store, "explain")
    with store.read("t") as cur:
        rows = cur.execute(
            "SELECT feature_id, text, active_count, active_total FROM feature_contrastive "
            "WHERE kind = 'token'"
        ).fetchall()
    assert rows
    for fid, text, count, total in rows:
        recount, n = 0, 0
        for w in windows[fid]:
            tokens, values, indices = reference(sarm, responses[w.example_id].conversation())
            column = dense(values, indices, fid)
            lo = max(0, int(np.where(column != 0, column, -np.inf).argmax()) - WINDOW)
            span = slice(lo, lo + len(w.tokens))
            assert tuple(tokens[span]) == w.tokens
            scored = len(tokens) - 1
            for i, tok, a in zip(range(lo, scored + 1), tokens[span], column[span], strict=False):
                if a != 0 and i != scored:
                    n += 1
                    recount += tok == text
        assert (count, total) == (recount, n)


def test_heldout_windows_are_disjoint_balanced_and_seeded(indexed):
    store, _, _ = indexed
    explain, heldout = split_windows(store, "explain"), split_windows(store, "heldout")
    for fid, test in heldout.items():
        shown = {w.example_id for w in explain.get(fid, [])}
        assert not shown & {w.example_id for w in test if w.active}
        pos = sum(w.active for w in test)
        assert sum(not w.active for w in test) <= pos
    with store.read("t") as cur:
        again = cur.execute(
            "SELECT count(*) FROM feature_window_splits WHERE split = 'heldout'"
        ).fetchone()[0]
    assert again == sum(len(v) for v in heldout.values())


def test_resumed_ingest_stores_the_same_evidence(sarm, indexed, tmp_path):
    store, groups, _ = indexed
    path = tmp_path / "resumed.duckdb"

    def stop_after_two(chunk):
        if chunk.index == 1:
            raise KeyboardInterrupt

    with FeatureStore.open(path) as partial, pytest.raises(KeyboardInterrupt):
        ingest(
            partial,
            sarm,
            groups,
            batch_size=3,
            chunk_size=4,
            top_n=3,
            progress=False,
            evidence=EvidenceSpec(WINDOW),
            on_chunk=stop_after_two,
        )
    with FeatureStore.open(path) as resumed:
        ingest(
            resumed,
            sarm,
            groups,
            batch_size=3,
            chunk_size=4,
            top_n=3,
            progress=False,
            evidence=EvidenceSpec(WINDOW),
        )
    query = (
        "SELECT * FROM evidence_windows ORDER BY example_id, feature_id",
        "SELECT * EXCLUDE (chunk_index) FROM evidence_counts ORDER BY chunk_index, feature_id",
        "SELECT * FROM feature_density ORDER BY feature_id",
        "SELECT * FROM feature_contrastive ORDER BY ALL",
    )
    with (
        FeatureStore.open(path, read_only=True) as resumed,
        resumed.read("a") as a,
        store.read("b") as b,
    ):
        for sql in query:
            assert a.execute(sql).fetchall() == b.execute(sql).fetchall()


def test_a_schema_5_store_migrates_and_keeps_its_rows(indexed, tmp_path):
    import duckdb

    from feature_store.schema import latest_version, migrate

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, target=5)
    con.execute("INSERT INTO meta VALUES ('note', 'kept')")
    con.close()
    with FeatureStore.open(path) as store, store.read("t") as cur:
        versions = cur.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        assert versions == latest_version() >= 6
        assert cur.execute("SELECT value FROM meta WHERE key = 'note'").fetchone()[0] == "kept"
        assert cur.execute("SELECT count(*) FROM evidence_windows").fetchone()[0] == 0


def test_a_schema_7_store_gains_the_windows_of_its_splits(indexed, tmp_path):
    """Migration 008 copies each split row's window from evidence_windows, as a refresh does."""
    import duckdb

    from feature_store.schema import migrate

    store, _, _ = indexed
    query = """SELECT feature_id, split, example_id, active, start, activations, peak
               FROM feature_window_splits ORDER BY feature_id, split, example_id"""
    with store.read("t") as cur:
        windows = cur.execute("SELECT * FROM evidence_windows").df()
        splits = cur.execute(
            "SELECT feature_id, split, example_id, active FROM feature_window_splits"
        ).df()
        want = cur.execute(query).fetchall()
    path = tmp_path / "v7.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, target=7)
    con.register("old_windows", windows)
    con.register("old_splits", splits)
    con.execute("INSERT INTO evidence_windows SELECT * FROM old_windows")
    con.execute("INSERT INTO feature_window_splits SELECT * FROM old_splits")
    con.close()
    with FeatureStore.open(path) as migrated, migrated.read("t") as cur:
        got = cur.execute(query).fetchall()
    assert got == want
    assert any(r[4] is not None for r in got) and any(r[4] is None for r in got)  # negatives


def test_a_v1_annotations_file_gains_explanations_and_keeps_labels(tmp_path):
    import sqlite3

    path = tmp_path / "s.duckdb"
    ann = annotations_path(path)
    con = sqlite3.connect(ann)
    old = (Path(__file__).parents[2] / "feature_store/sql/annotations.sql").read_text()
    con.executescript(old.split("-- Version 2")[0] + "PRAGMA user_version = 1;")
    con.execute(
        "INSERT INTO labels (feature_id, label, description, author, source, created_at) "
        "VALUES (3, 'refusal', '', 'me', 'human', '2026-01-01 00:00:00')"
    )
    con.commit()
    con.close()
    with FeatureStore.open(path) as store:
        assert store.explanations().empty
        assert store.display_explanations().to_dict("records") == [
            {
                "feature": 3,
                "text": "refusal",
                "source": "label",
                "score": pytest.approx(np.nan, nan_ok=True),
                "fuzzing": pytest.approx(np.nan, nan_ok=True),
                "ceiling": pytest.approx(np.nan, nan_ok=True),
            }
        ]
    assert sqlite3.connect(ann).execute("PRAGMA user_version").fetchone()[0] == 2


def test_stats_explanations_are_saved_scored_and_a_label_wins(indexed, tmp_path):
    _, _, path = indexed
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(Path(path).read_bytes())
    with FeatureStore.open(copy) as store:
        report = run_stats_explainer(store)
        frame = store.explanations()
        assert {"feature", "text", "source", "score", "created_at"} <= set(frame.columns)
        assert len(frame) == report.n_explained == report.n_features
        assert set(frame["source"]) == {"stats"}
        fid = int(frame["feature"].iloc[0])
        store.set_label(fid, "my label", author="tester")
        run_stats_explainer(store)  # a second run appends; the label still wins
        shown = store.display_explanations().set_index("feature")
        assert shown.loc[fid, "text"] == "my label"
        assert len(store.explanation_history(fid)) == 2


def test_opening_a_feature_page_runs_no_model(indexed):
    """Structural: the evidence read imports no model code, in a fresh process."""
    store, _, path = indexed
    code = (
        "import sys, json; from feature_store import FeatureStore\n"
        f"s = FeatureStore.open({str(path)!r}, read_only=True)\n"
        "ev = s.feature_evidence(int(s.features().iloc[0]['feature_id']))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'model': 'sarm.model' in sys.modules,"
        " 'windows': len(ev['windows'])}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["model"] is False
    assert found["windows"] > 0
    ev = store.feature_evidence(0)
    assert set(ev["decoder"]["kind"]) == {"neighbour"}  # the released layout: no lens
    assert "no unembedding" in ev["decoder_note"]


def test_logit_lens_matches_the_full_model_and_no_unembedding_is_said(tmp_path, sarm):
    from helpers import make_tokenizer, tiny_llama_config
    from transformers import LlamaForCausalLM

    from sarm.backbones import load_backbone
    from sarm.explain.decoder import logit_lens, nearest_features, unembedding

    tok = make_tokenizer()
    config = tiny_llama_config(len(tok))
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    full = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        full.model.norm.weight.uniform_(0.5, 1.5)
    full.save_pretrained(tmp_path / "tied")
    tok.save_pretrained(tmp_path / "tied")
    lens, note = unembedding(load_backbone(tmp_path / "tied", 2))
    assert lens is not None and note == ""
    d = torch.randn(5, config.hidden_size)
    up_i, up_v, down_i, _ = logit_lens(d, lens, top=4)
    with torch.no_grad():
        logits = full.lm_head(full.model.norm(d))
    np.testing.assert_array_equal(up_i, logits.topk(4).indices.numpy())
    np.testing.assert_allclose(up_v, logits.topk(4).values.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(down_i, (-logits).topk(4).indices.numpy())
    # the released layout keeps no unembedding: said, not guessed
    assert unembedding(sarm.backbone)[0] is None
    assert "no unembedding" in unembedding(sarm.backbone)[1]
    ids, cos = nearest_features(d, top=2)
    unit = torch.nn.functional.normalize(d, dim=-1)
    sims = (unit @ unit.T).fill_diagonal_(-2)
    np.testing.assert_array_equal(ids, sims.topk(2).indices.numpy())
    np.testing.assert_allclose(cos, sims.topk(2).values.numpy(), atol=1e-6)


def test_explanations_round_trip_through_neuronpedia_json_and_parquet(indexed, tmp_path):
    import pandas as pd

    from feature_store.explanation_io import export_explanations, import_explanations

    _, _, path = indexed
    source = tmp_path / "a.duckdb"
    source.write_bytes(Path(path).read_bytes())
    with FeatureStore.open(source) as store:
        run_stats_explainer(store)
        store.set_label(5, "five", "a label", author="me")
        n = export_explanations(store, tmp_path / "x.json")
        export_explanations(store, tmp_path / "x.parquet")
        before = store.explanations()
    rows = json.loads((tmp_path / "x.json").read_text())
    assert n == len(rows) == len(before) + 1
    assert {
        "modelId",
        "layer",
        "index",
        "description",
        "explanationModelName",
        "typeName",
        "scores",
    } <= set(rows[0])
    assert len(pd.read_parquet(tmp_path / "x.parquet")) == n
    target = tmp_path / "b.duckdb"
    target.write_bytes(Path(path).read_bytes())
    with FeatureStore.open(target) as store:
        assert import_explanations(store, tmp_path / "x.json") == n
        after = store.explanations()
        assert store.labels_for([5]) == {5: "five"}
    cols = ["feature", "text", "source", "version", "score", "evidence_hash", "details"]
    pd.testing.assert_frame_equal(after[cols], before[cols])
