"""Scores that dataset membership cannot pass for meaning (issue 22), on a planted store.

The store holds two sources. Feature 0 fires at the scored token of half the
responses of source ``srcA`` and never in ``srcB``: knowing the source is all there is
to know about it. Feature 1 fires at the word `` zebra``, planted in half the
responses of both sources: a content feature. References are recounted from the
store's raw tables (``examples``, ``feature_window_splits``), never from the scorer.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from feature_store.explanation_scores import rule_scores
from feature_store.explanations import (
    SPLITS,
    example_metadata,
    explain_stats,
    metadata_rows,
    split_windows,
    top_weight_features,
)
from feature_store.sqlutil import insert_arrow
from feature_store.synthetic import store_from_arrays
from sarm.explain.evidence import N_BINS
from sarm.explain.scoring import (
    Distribution,
    detection_score,
    fuzz_items,
    fuzzing_score,
)
from sarm.explain.stats import Rule, legacy_explanation, only_dataset_shares
from sarm.explain.types import EvidenceWindow
from sarm.types import PreferenceGroup

WINDOW, D_SAE, PAIRS = 4, 8, 40
SOURCE_FEATURE, ZEBRA_FEATURE = 0, 1
VOCAB = [f" w{i}" for i in range(30)]


def planted_groups() -> list[PreferenceGroup]:
    return [
        PreferenceGroup(
            group_id=f"{source}/{i}",
            prompt=({"role": "user", "content": f"question {i}"},),
            chosen=(f"answer {i} of {source}",),
            rejected=(f"other answer {i} of {source}",),
            subset=source.lower(),
        )
        for source in ("srcA", "srcB")
        for i in range(PAIRS)
    ]


def planted_responses(n: int, rng: np.random.Generator):
    """Per response: its tokens (ending in the scored token) and where `` zebra`` is."""
    out = []
    for _ in range(n):
        tokens = [str(t) for t in rng.choice(VOCAB, size=int(rng.integers(20, 45)))]
        zebra = int(rng.integers(WINDOW + 1, len(tokens) - WINDOW)) if rng.random() < 0.5 else None
        if zebra is not None:
            tokens[zebra] = " zebra"
        out.append(([*tokens, "<eot>"], zebra))
    return out


def window_row(e: int, fid: int, acts: np.ndarray, peak: int) -> dict:
    start = max(0, peak - WINDOW)
    return {
        "example_id": e,
        "feature_id": fid,
        "peak": peak,
        "peak_activation": float(acts[peak]),
        "start": start,
        "activations": acts[start : peak + WINDOW + 1].tolist(),
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = np.random.default_rng(0)
    groups = planted_groups()
    n = 4 * PAIRS
    responses = planted_responses(n, rng)
    source_a = np.arange(n) < 2 * PAIRS  # responses_of: srcA's pairs come first
    fires0 = source_a & (rng.random(n) < 0.5)
    indices, values, windows = [], [], []
    for e, (tokens, zebra) in enumerate(responses):
        active = [f for f, on in ((0, fires0[e]), (1, zebra is not None)) if on]
        indices.append(np.array(active, np.int32))
        values.append(np.ones(len(active), np.float32))
        scored = len(tokens) - 1
        if fires0[e]:  # fires at the scored token only
            acts = np.zeros(len(tokens), np.float32)
            acts[scored] = 1.0
            windows.append(window_row(e, SOURCE_FEATURE, acts, scored))
        if zebra is not None:  # fires at the zebra (its peak) and the scored token
            acts = np.zeros(len(tokens), np.float32)
            acts[zebra], acts[scored] = 2.0, 1.0
            windows.append(window_row(e, ZEBRA_FEATURE, acts, zebra))
    path = tmp_path_factory.mktemp("planted") / "s.duckdb"
    weights = np.linspace(1.0, 0.1, D_SAE).astype(np.float32)
    store = store_from_arrays(path, groups, indices, values, weights, chunk_size=n)
    with store.write("planting evidence") as cur:
        insert_arrow(
            cur,
            "evidence_responses",
            pa.table(
                {
                    "example_id": pa.array(range(n), pa.int64()),
                    "tokens": [t for t, _ in responses],
                    "token_ids": [
                        [VOCAB.index(x) if x in VOCAB else 99 for x in t] for t, _ in responses
                    ],
                    "scored": pa.array([len(t) - 1 for t, _ in responses], pa.int32()),
                }
            ),
        )
        table = pa.Table.from_pylist(windows)
        insert_arrow(cur, "evidence_windows", table.cast(evidence_windows_schema()))
        cur.execute(
            "INSERT INTO evidence_chunks VALUES (0, ?, ?, ?)",
            [sum(len(t) for t, _ in responses), n, WINDOW],
        )
        for fid, count in ((0, int(fires0.sum())), (1, sum(z is not None for _, z in responses))):
            cur.execute(
                "INSERT INTO evidence_counts VALUES (0, ?, ?, ?, ?)",
                [fid, count, count, [0] * N_BINS],
            )
    store.refresh_stats(top_n=3)
    with store.read("t") as cur:  # the planted sources are the stored examples' sources
        stored = cur.execute("SELECT group_id FROM examples ORDER BY example_id").fetchall()
    assert [g.startswith("srcA/") for (g,) in stored] == source_a.tolist()
    yield store, fires0, responses
    store.close()


def evidence_windows_schema() -> pa.Schema:
    from sarm.explain.evidence import WINDOWS_SCHEMA

    return WINDOWS_SCHEMA


def test_matched_negatives_share_their_positive_source_subset_and_are_silent(planted):
    store, fires0, _ = planted
    with store.read("t") as cur:
        rows = cur.execute(
            """SELECT m.feature_id, split_part(a.group_id, '/', 1), a.subset,
                      split_part(b.group_id, '/', 1), b.subset, m.example_id
               FROM feature_window_splits m
               JOIN examples a ON a.example_id = m.example_id
               JOIN examples b ON b.example_id = m.matched_to
               WHERE m.split = 'matched'"""
        ).fetchall()
        positives = cur.execute(
            """SELECT count(*) FROM feature_window_splits
               WHERE split = 'heldout' AND active AND feature_id = 0"""
        ).fetchone()[0]
    mine = [r for r in rows if r[0] == SOURCE_FEATURE]
    assert positives >= 10 and len(mine) == positives  # every positive found a partner
    assert all(r[1:3] == r[3:5] == ("srcA", "srca") for r in mine)
    assert not any(fires0[r[5]] for r in mine)  # the feature is silent in each negative
    assert len({r[5] for r in mine}) == len(mine)  # no response used twice


def test_a_source_only_explanation_scores_chance_controlled_but_high_uncontrolled(planted):
    store, _, _ = planted
    meta = example_metadata(store)
    rule = Rule(metadata=("source", "srcA"))  # "100% srcA"

    def predict(w):
        return rule.predict(w, meta[w.example_id])

    heldout = split_windows(store, "heldout", [SOURCE_FEATURE])[SOURCE_FEATURE]
    matched = split_windows(store, "matched", [SOURCE_FEATURE])[SOURCE_FEATURE]
    # reference from the raw tables: every positive is srcA (TPR 1); a negative is
    # rejected exactly when it is not from srcA
    with store.read("t") as cur:
        other = cur.execute(
            """SELECT avg((split_part(e.group_id, '/', 1) <> 'srcA')::INT)
               FROM feature_window_splits s JOIN examples e USING (example_id)
               WHERE s.split = 'heldout' AND NOT s.active AND s.feature_id = 0"""
        ).fetchone()[0]
    assert detection_score(heldout, predict) == pytest.approx(0.5 * (1 + other))
    assert detection_score(heldout, predict) > 0.75
    assert detection_score(matched, predict) == pytest.approx(0.5)


def test_the_stats_explainer_scores_content_high_and_the_source_feature_at_chance(planted):
    store, _, _ = planted
    found, report = explain_stats(store, [SOURCE_FEATURE, ZEBRA_FEATURE])
    by_id = {e.feature_id: e for e in found}
    zebra = by_id[ZEBRA_FEATURE]
    assert "zebra" in zebra.text
    assert zebra.score == pytest.approx(1.0)  # controlled detection
    assert zebra.details["scores"]["fuzzing"] == pytest.approx(1.0)
    source = by_id[SOURCE_FEATURE]
    assert source.score == pytest.approx(0.5, abs=0.15)
    # the legacy explainer says only "100% srcA": high uncontrolled, chance controlled
    windows = {s: split_windows(store, s, [SOURCE_FEATURE])[SOURCE_FEATURE] for s in SPLITS}
    with store.read("t") as cur:
        contrastive = cur.execute(
            "SELECT count(*) FROM feature_contrastive WHERE feature_id = 0"
        ).fetchone()[0]
    assert contrastive == 0  # it is active at the scored token only
    old = legacy_explanation([], metadata_rows(store)[SOURCE_FEATURE])
    assert old.text in ("100% srcA", "100% srca")  # its source or its subset
    scores = rule_scores(old, windows, example_metadata(store))
    assert scores["uncontrolled"] > 0.75 and scores["controlled"] == pytest.approx(0.5)
    legacy = report.scores.distributions["stats-1"]
    assert legacy["controlled"].n == 2
    current = report.scores.distributions["stats-2"]["controlled"]
    assert current.median == pytest.approx((zebra.score + source.score) / 2)  # n = 2
    assert report.scores.share_only["stats-2"] == 0
    assert report.scores.share_only["stats-1"] >= 1


def test_stats_texts_are_never_only_dataset_shares_and_keep_them_as_metadata(planted):
    store, _, _ = planted
    found, _ = explain_stats(store)
    assert {e.feature_id for e in found} == {SOURCE_FEATURE, ZEBRA_FEATURE}
    for e in found:
        assert not only_dataset_shares(e.text), e.text
        assert "srcA" not in e.text and "%" not in e.text
    meta = {e.feature_id: e.details["metadata"] for e in found}
    assert meta[SOURCE_FEATURE]["source"] == {"value": "srcA", "share": 1.0, "lift": 2.0}


def test_a_store_without_matched_negatives_gets_them_drawn_the_same(planted):
    store, _, _ = planted
    first, _ = explain_stats(store)
    with store.write("t") as cur:
        cur.execute("DELETE FROM feature_window_splits WHERE split = 'matched'")
    again, _ = explain_stats(store)
    assert [e.score for e in again] == [e.score for e in first]


def test_top_weight_features_rank_firing_features_by_absolute_weight(planted):
    store, _, _ = planted
    assert top_weight_features(store, 1) == [SOURCE_FEATURE]  # weights fall with the id
    assert top_weight_features(store, 5) == [SOURCE_FEATURE, ZEBRA_FEATURE]


# ------------------------------------------------------------------ fuzzing, alone


def random_windows(n: int, seed: int = 0) -> list[EvidenceWindow]:
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        acts = np.where(rng.random(9) < 0.2, rng.random(9) + 0.1, 0.0)
        peak = int(rng.integers(9))
        acts[peak] = 3.0
        out.append(
            EvidenceWindow(e, tuple(f" t{i}" for i in range(9)), tuple(acts.tolist()), True, peak)
        )
    return out


def test_fuzz_items_pair_each_peak_with_a_silent_token_of_the_same_window():
    windows = random_windows(300)
    items = fuzz_items(windows)
    positives = [i for i in items if i.firing]
    negatives = [i for i in items if not i.firing]
    assert [(i.window, i.index) for i in positives] == [(w, w.peak) for w in windows]
    silent = [w for w in windows if 0.0 in w.activations]
    assert [i.window for i in negatives] == silent
    assert all(i.window.activations[i.index] == 0.0 for i in negatives)
    assert fuzz_items(windows) == items  # seeded


def test_fuzzing_is_one_for_a_perfect_token_predictor_and_chance_for_a_random_one():
    items = fuzz_items(random_windows(2000))
    assert fuzzing_score(items, lambda w, i: w.activations[i] != 0) == pytest.approx(1.0)
    assert fuzzing_score(items, lambda w, i: i == w.peak) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    coin = fuzzing_score(items, lambda w, i: bool(rng.random() < 0.5))
    assert coin == pytest.approx(0.5, abs=0.04)
    assert fuzzing_score(items, lambda w, i: True) == pytest.approx(0.5)


def test_only_dataset_shares_reads_the_shares_and_nothing_else():
    assert only_dataset_shares("100% truthfulqa_judged")
    assert only_dataset_shares("91% harmless-base · chosen x3.2")
    assert not only_dataset_shares("`I can't`, `sorry` · 91% harmless-base")
    assert not only_dataset_shares("at the end-of-turn token")
    assert not only_dataset_shares("")


def test_distribution_quartiles_against_hand_counts():
    d = Distribution.of([0.8, 0.5, None, 0.7, 0.6])
    # sorted 0.5 0.6 0.7 0.8, linear interpolation: q1 at 0.75 -> 0.575, q3 at 2.25 -> 0.725
    assert (d.n, d.median, d.q1, d.q3) == (
        4,
        pytest.approx(0.65),
        pytest.approx(0.575),
        pytest.approx(0.725),
    )
    assert Distribution.of([None]).n == 0


def _split_rows(store, split: str):
    with store.read("t") as cur:
        return cur.execute(
            """SELECT m.feature_id, m.example_id, m.matched_to,
                      split_part(a.group_id, '/', 1), a.subset,
                      split_part(b.group_id, '/', 1), b.subset
               FROM feature_window_splits m
               JOIN examples a ON a.example_id = m.example_id
               JOIN examples b ON b.example_id = m.matched_to
               WHERE m.split = ?""",
            [split],
        ).fetchall()


def test_contrast_negatives_match_explain_positives_and_never_reuse_a_heldout_one(planted):
    store, fires0, responses = planted
    contrast, matched = _split_rows(store, "contrast"), _split_rows(store, "matched")
    with store.read("t") as cur:
        explain = set(
            cur.execute(
                "SELECT feature_id, example_id FROM feature_window_splits "
                "WHERE split = 'explain' AND active"
            ).fetchall()
        )
    assert contrast and {(f, p) for f, _, p, *_ in contrast} <= explain
    assert all(r[3:5] == r[5:7] for r in contrast)  # same source and subset
    fires = {SOURCE_FEATURE: fires0, ZEBRA_FEATURE: [z is not None for _, z in responses]}
    assert not any(fires[f][e] for f, e, *_ in contrast)  # silent in every negative
    held = {(f, e) for f, e, *_ in matched}
    assert not held & {(f, e) for f, e, *_ in contrast}  # held-out negatives stay unseen


def test_the_text_ceiling_finds_the_zebra_and_not_the_source(planted):
    from feature_store.text_ceiling import text_ceilings

    store, _, _ = planted
    ceilings = text_ceilings(store, [SOURCE_FEATURE, ZEBRA_FEATURE])
    # reference: ` zebra` is in every positive window of both splits and in no negative
    for split in ("contrast", "matched"):
        windows = split_windows(store, split, [ZEBRA_FEATURE])[ZEBRA_FEATURE]
        assert all((" zebra" in w.tokens) == w.active for w in windows)
    assert ceilings[ZEBRA_FEATURE] == pytest.approx(1.0)
    # the source feature fires at random within srcA: no token tells it apart
    assert 0.25 <= ceilings[SOURCE_FEATURE] <= 0.75


def test_a_read_only_store_without_contrast_windows_says_the_ceiling_is_unmeasured(
    planted, tmp_path, caplog
):
    import shutil

    from feature_store import FeatureStore
    from feature_store.text_ceiling import text_ceilings

    store, _, _ = planted
    before = text_ceilings(store, [ZEBRA_FEATURE])
    with store.write("t") as cur:
        cur.execute("CHECKPOINT")
    copy = tmp_path / "old.duckdb"
    shutil.copy(store.path, copy)
    annotations = tmp_path / "old.sqlite"
    with FeatureStore.open(copy, annotations=annotations) as old, old.write("t") as cur:
        cur.execute("DELETE FROM feature_window_splits WHERE split = 'contrast'")  # older store
    with (
        FeatureStore.open(copy, read_only=True, annotations=annotations) as old,
        caplog.at_level("WARNING", logger="feature_store.explanations"),
    ):
        assert text_ceilings(old, [ZEBRA_FEATURE]) == {ZEBRA_FEATURE: None}
    assert "no contrast windows" in caplog.text
    with FeatureStore.open(copy, annotations=annotations) as old:  # writable: drawn again
        assert text_ceilings(old, [ZEBRA_FEATURE]) == before
