"""Which explanation the dashboard shows: a label, else the best-scoring one of any explainer,
with its detection and fuzzing scores."""

from __future__ import annotations

import math

import pytest

from feature_store.explanations import save_explanations
from feature_store.synthetic import SyntheticSpec, build_synthetic_store
from sarm.explain.types import Explanation


@pytest.fixture
def store(tmp_path):
    s = build_synthetic_store(tmp_path / "s.duckdb", SyntheticSpec(n_pairs=10, d_sae=16, nnz=4))
    yield s
    s.close()


def stats(fid, text, score, fuzzing):
    details = {"scores": {"controlled": score, "fuzzing": fuzzing}}
    return Explanation(fid, text, "stats", "stats-2", score, None, "h", details)


def llm(fid, text, score):
    return Explanation(fid, text, "llm:small", "llm-1", score, 3, "h", {})


def test_the_best_scoring_explanation_of_any_kind_is_shown(store):
    save_explanations(
        store,
        [
            stats(1, "stats wins", 0.80, 0.95),
            llm(1, "llm loses", 0.60),
            stats(2, "stats loses", 0.55, 0.70),
            llm(2, "llm wins", 0.75),
            stats(3, "only stats, unscored", None, None),
            llm(4, "tie: llm first", 0.6),
            stats(4, "tie: stats second", 0.6, 0.9),
        ],
    )
    shown = store.display_explanations().set_index("feature")
    assert list(shown.columns) == ["text", "source", "score", "fuzzing", "ceiling"]
    assert shown.loc[1, "text"] == "stats wins" and shown.loc[1, "fuzzing"] == 0.95
    assert shown.loc[2, "text"] == "llm wins" and math.isnan(shown.loc[2, "fuzzing"])
    assert shown.loc[3, "text"] == "only stats, unscored" and math.isnan(shown.loc[3, "score"])
    assert shown.loc[4, "text"] == "tie: llm first"
    save_explanations(store, [stats(1, "newer stats, worse", 0.5, 0.5)])  # newest per source
    assert store.display_explanations().set_index("feature").loc[1, "text"] == "llm loses"
    store.set_label(2, "my label")
    shown = store.display_explanations().set_index("feature")
    assert shown.loc[2, "text"] == "my label" and shown.loc[2, "source"] == "label"


def test_unknown_columns_are_refused(store):
    with pytest.raises(ValueError, match="no columns"):
        store.annotations.latest_explanations(["feature_id", "text; DROP TABLE labels"])
