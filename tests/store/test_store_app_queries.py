"""Store reads added for the dashboard: example text search, texts by id, revision."""

from __future__ import annotations

import numpy as np
import pytest

from feature_store.synthetic import store_from_arrays
from sarm.types import PreferenceGroup

TEXTS = [
    ("Is it 100% safe?", "Yes, Completely.", "no"),
    ("Write CODE please", "def f(): pass", "I can't"),
    ("Say 100 things", "one two", "three_four"),
    ("What's up?", "It's fine.", "Nothing_at all"),
]


@pytest.fixture
def store(tmp_path):
    groups = [
        PreferenceGroup(f"g{i}", ({"role": "user", "content": p},), (c,), (r,), subset="s")
        for i, (p, c, r) in enumerate(TEXTS)
    ]
    rng = np.random.default_rng(0)
    n = 2 * len(groups)
    ids = [np.sort(rng.choice(16, 3, replace=False)).astype(np.int32) for _ in range(n)]
    vals = [rng.random(3).astype(np.float32) for _ in range(n)]
    s = store_from_arrays(tmp_path / "q.duckdb", groups, ids, vals, rng.normal(size=16), top_n=2)
    yield s
    s.close()


def reference_search(store, text: str) -> list[int]:
    frame = store.examples_frame(with_text=True)
    hit = frame["prompt"].str.lower().str.contains(text.lower(), regex=False) | frame[
        "response"
    ].str.lower().str.contains(text.lower(), regex=False)
    return frame.loc[hit, "example_id"].tolist()


@pytest.mark.parametrize("text", ["100%", "code", "COMPLETELY", "_", "it's", "t", "zzz"])
def test_search_examples_matches_a_literal_case_insensitive_reference(store, text):
    got = store.search_examples(text)
    assert got.dtype == np.int64
    assert got.tolist() == reference_search(store, text)


def test_search_limit_and_validation(store):
    assert store.search_examples("t", limit=2).tolist() == reference_search(store, "t")[:2]
    with pytest.raises(ValueError, match="search text is empty"):
        store.search_examples("  ")
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.search_examples("a", limit=0)


def test_example_texts(store):
    frame = store.examples_frame(with_text=True).set_index("example_id")
    got = store.example_texts([5, 0, 3, 99])
    assert got["example_id"].tolist() == [0, 3, 5]
    for _, row in got.iterrows():
        assert row["prompt"] == frame.loc[row["example_id"], "prompt"]
        assert row["response"] == frame.loc[row["example_id"], "response"]
    assert store.example_texts([]).empty
    with pytest.raises(ValueError, match="example_ids"):
        store.example_texts([-1])
    with pytest.raises(ValueError, match="at most 5000"):
        store.example_texts(list(range(5001)))


def test_revision_changes_with_labels_and_heads(store):
    first = store.revision()
    label_id = store.set_label(3, "x")
    second = store.revision()
    assert second == (label_id, first[1]) and second != first
    weights, bias = store.head_weights()
    store.save_head("v1", weights, bias, parent="ingest")
    assert store.revision() == (label_id, first[1] + 1)
