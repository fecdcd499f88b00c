"""The frames the pages show (app.tables), checked against loops over the raw data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import core, tables
from sarm.audit import misranked_pairs, pair_table, subset_accuracy
from sarm.evaluate import PairIndex, evaluate_arrays
from sarm.head import Head

SUBSETS = ["chat", "code", "safety"]


@pytest.fixture
def pairs():
    """Eight groups of one chosen and one rejected response, in three subsets, random rewards."""
    rows = []
    for g in range(8):
        for role in ("chosen", "rejected"):
            rows.append(
                {
                    "example_id": len(rows) + 100,
                    "group_index": g,
                    "group_id": f"g{g}",
                    "role": role,
                    "response_index": 0,
                    "kind": "pair",
                    "subset": SUBSETS[g % 3],
                }
            )
    frame = pd.DataFrame(rows)
    rewards = np.random.default_rng(3).normal(size=len(frame))
    return frame, rewards, PairIndex.from_frame(frame)


def by_hand(frame, rewards):
    """(group_id, subset, chosen_id, rejected_id, margin) of every group, by a plain loop."""
    out = []
    for g in sorted(set(frame["group_index"])):
        part = frame[frame["group_index"] == g]
        c = part[part["role"] == "chosen"].index[0]
        r = part[part["role"] == "rejected"].index[0]
        out.append(
            (
                frame.loc[c, "group_id"],
                frame.loc[c, "subset"],
                frame.loc[c, "example_id"],
                frame.loc[r, "example_id"],
                rewards[c] - rewards[r],
            )
        )
    return out


def test_filter_pairs(pairs):
    frame, rewards, index = pairs
    table = pair_table(rewards, index, frame)
    expected = by_hand(frame, rewards)
    assert len(tables.filter_pairs(table)) == 8
    for subsets, wrong_only in [(["chat"], False), (["code", "safety"], True), ([], True)]:
        shown = tables.filter_pairs(table, subsets, wrong_only)
        want = [
            (m, c, r)
            for _, s, c, r, m in expected
            if (not subsets or s in subsets) and (m <= 0 or not wrong_only)
        ]
        if wrong_only:  # misranked pairs: worst (most negative) margin first
            want.sort()
        got = list(zip(shown["chosen_id"], shown["rejected_id"], strict=True))
        assert got == [(c, r) for _, c, r in want]
    assert len(table) == 8  # the input is not modified


def test_misranked_and_subset_accuracy(pairs):
    frame, rewards, index = pairs
    wrong = misranked_pairs(rewards, index, frame)
    shown = tables.misranked(wrong, limit=2)
    margins = sorted(m for *_, m in by_hand(frame, rewards) if m <= 0)
    assert 2 < len(margins) < 8  # the seed gives both kinds of pairs
    assert "correct" not in shown and "correct" in wrong
    np.testing.assert_allclose(shown["margin"], margins[:2])
    assert len(tables.misranked(wrong)) == len(margins)
    acc = tables.subset_accuracy(subset_accuracy(rewards, None, index)).set_index("subset")
    assert "accuracy_before" not in acc
    for name in SUBSETS:
        ms = [m for _, s, _, _, m in by_hand(frame, rewards) if s == name]
        assert acc.loc[name, "accuracy"] == pytest.approx(np.mean([m > 0 for m in ms]))
        assert acc.loc[name, "n_pairs"] == len(ms)


def test_head_metrics_are_the_reports_numbers(pairs):
    frame, rewards, index = pairs
    metrics = tables.head_metrics(evaluate_arrays(rewards, index))
    margins = [m for *_, m in by_hand(frame, rewards)]
    assert metrics["pairwise_accuracy"] == pytest.approx(np.mean([m > 0 for m in margins]))
    assert metrics["n_pairs"] == 8.0
    assert {k for k in metrics if k.startswith("accuracy_")} == {f"accuracy_{s}" for s in SUBSETS}
    singles = frame.assign(kind="single", role="single")
    empty = tables.head_metrics(evaluate_arrays(rewards, PairIndex.from_frame(singles)))
    assert empty == {"n_pairs": 0.0}  # accuracies of no pairs (None) are not recorded


def test_margin_waterfall_adds_up_to_the_margin():
    weights = np.array([0.5, -2.0, 1.0, 3.0, -0.25])
    chosen = core.explain({0: 2.0, 1: 0.25, 3: -1.0}, Head(weights, 0.1), {3: "three"})
    rejected = core.explain({1: 1.0, 2: 0.5, 4: 4.0}, Head(weights, 0.1), {2: "two"})
    deltas = core.pair_deltas(chosen, rejected)
    top, labels = tables.margin_waterfall(deltas, 2)
    assert top.total == pytest.approx(chosen.reward - rejected.reward)
    by_size = sorted(
        ((f, chosen.contributions.get(f, 0) - rejected.contributions.get(f, 0)) for f in range(5)),
        key=lambda x: -abs(x[1]),
    )
    assert [f for f, _ in top.top] == [f for f, _ in by_size[:2]]
    assert top.n_rest == 3 and top.bias == 0.0
    assert labels == {0: "", 1: "", 2: "two", 3: "three", 4: ""}


def test_weight_changes_and_labels():
    changes = [(7, 0.5, -0.25), (2, 0.0, 0.125)]
    out = tables.weight_changes(changes, {2: "two"})
    assert out.columns.tolist() == ["feature_id", "label", "old_weight", "new_weight", "delta"]
    assert out["label"].tolist() == ["", "two"]
    np.testing.assert_allclose(out["delta"], [-0.75, 0.125])
    assert tables.weight_changes([], {}).empty
    frame = pd.DataFrame({"feature_id": np.array([3, 1], dtype=np.int64), "x": [1.0, 2.0]})
    labelled = tables.with_labels(frame, {1: "one"})
    assert labelled["label"].tolist() == ["", "one"] and "label" not in frame


def test_feature_table_shows_the_current_weight():
    frame = pd.DataFrame(
        {
            "feature_id": [4, 0, 2],
            "label": ["a", "", "c"],
            "weight": [0.1, 0.2, 0.3],
            "frequency": [0.5, 0.25, 0.125],
            "mean_activation": [1.0, 2.0, 3.0],
            "mean_contribution": [0.1, 0.4, 0.9],
            "salience": [1.0, 1.0, 1.0],
            "label_description": ["", "", ""],
            "extra": [9, 9, 9],
        }
    )
    weights = np.array([1.5, 0.0, -2.5, 0.0, 0.75], dtype=np.float32)
    out = tables.feature_table(frame, weights)
    assert out.columns.tolist() == tables.FEATURE_COLUMNS
    assert out["current_weight"].tolist() == [0.75, 1.5, -2.5]
    assert "current_weight" not in frame


def test_example_tables_shorten_the_responses():
    long = "a  long\nresponse " * 20
    top = pd.DataFrame(
        {
            "rank": [1, 2],
            "example_id": [5, 9],
            "activation": [2.0, 1.0],
            "contribution": [0.2, 0.1],
            "role": ["chosen", "rejected"],
            "subset": ["chat", None],
            "reward": [0.5, -0.5],
            "response": [long, "short"],
            "band": [1, 2],
            "prompt": ["p", "q"],
        }
    )
    shown = tables.top_examples(top)
    assert shown.columns.tolist() == tables.TOP_EXAMPLE_COLUMNS
    assert shown["response"].tolist() == [core.short(long), "short"]
    assert len(shown["response"].iloc[0]) == 80 and "\n" not in shown["response"].iloc[0]
    bands = tables.quantile_examples(top)
    assert bands.columns.tolist() == tables.QUANTILE_COLUMNS
    assert top["response"].iloc[0] == long


def test_verify_rows_and_table():
    assert tables.verify_rows(10, 4) == [0, 4, 9]
    assert tables.verify_rows(10, 9) == [0, 9]
    assert tables.verify_rows(1, 0) == [0]
    got, expected = np.array([0.5, -1.0]), np.array([0.5001, -1.0])
    out = tables.verify_table(np.array([3, 8]), got, expected)
    assert out["example_id"].tolist() == [3, 8]
    np.testing.assert_allclose(out["abs_diff"], [1e-4, 0.0], atol=1e-12)
    only = tables.verify_table(np.array([3, 8]), got)
    assert only.columns.tolist() == ["example_id", "checkpoint_reward"]


def test_pair_texts_sit_beside_the_ids():
    pairs = pd.DataFrame(
        {"pair": [0, 1], "chosen_id": [1, 3], "rejected_id": [2, 4], "margin": [-1.0, -0.5]}
    )
    texts = pd.DataFrame(
        {
            "example_id": [1, 2, 3],
            "prompt": ["Why?\n  Because", "Why?", "Q"],
            "response": ["x" * 100, "no", "yes"],
        }
    )
    assert tables.pair_text_ids(pairs) == [1, 2, 3, 4]
    assert tables.pair_text_ids(pairs, limit=3) == [1, 2, 3]
    out = tables.with_pair_texts(pairs, texts, n=10)
    assert list(out.columns) == [
        "pair",
        "chosen_id",
        "rejected_id",
        "prompt",
        "chosen_text",
        "rejected_text",
        "margin",
    ]
    assert out["prompt"].tolist() == ["Why? Beca\u2026", "Q"]
    assert out["chosen_text"].tolist() == ["x" * 9 + "\u2026", "yes"]
    assert out["rejected_text"].tolist() == ["no", ""]  # 4 has no text: an empty cell
    assert list(pairs.columns) == ["pair", "chosen_id", "rejected_id", "margin"]


def test_loaded_summary_is_a_readable_table():
    out = tables.loaded_summary(
        "default",
        {"backbone": "smol", "layer": 12, "sae": {"d_sae": 4096, "k": 32}},
        {"n_examples": 12345, "path": "/x/store.duckdb", "mean": 0.123456789},
        "ingest",
        2,
    ).set_index("item")["value"]
    assert out["model"] == "default" and out["model layer"] == "12"
    assert out["model sae"] == "d_sae: 4,096, k: 32"
    assert out["store n_examples"] == "12,345" and out["store mean"] == "0.123457"
    assert out["head (base version)"] == "ingest" and out["head: changed weights"] == "2"
