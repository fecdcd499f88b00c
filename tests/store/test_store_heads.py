"""Head versions: save, list, load back, diff; immutable and validated."""

from __future__ import annotations

import numpy as np
import pytest

from feature_store import HeadVersionError
from feature_store.synthetic import SyntheticSpec, build_synthetic_store

D_SAE = 32


@pytest.fixture
def store(tmp_path):
    s = build_synthetic_store(
        tmp_path / "heads.duckdb", SyntheticSpec(n_pairs=20, d_sae=D_SAE, nnz=4)
    )
    yield s
    s.close()


def test_ingest_head_is_saved(store):
    ingest = store.load_head("ingest")
    weights, bias = store.head_weights()
    np.testing.assert_array_equal(ingest.weights, weights)
    assert ingest.bias == bias and ingest.parent is None


def test_save_list_load_diff(store):
    base = store.load_head("ingest")
    edited = base.weights.copy()
    edited[[3, 17]] = [0.0, 2.5]
    saved = store.save_head(
        "no-f3",
        edited,
        bias=0.1,
        parent="ingest",
        note="drop feature 3",
        author="ann",
        metrics={"pairwise_accuracy": 0.71, "loss": 0.55},
    )
    assert saved.created_at is not None
    store.set_label(17, "verbosity")
    listing = store.head_versions()
    assert listing["name"].tolist()[0] == "no-f3"
    row = listing.set_index("name").loc["no-f3"]
    assert row["parent"] == "ingest" and row["note"] == "drop feature 3"
    assert row["metric_pairwise_accuracy"] == 0.71 and row["d_sae"] == D_SAE
    assert row["n_nonzero"] == np.count_nonzero(edited)
    loaded = store.load_head("no-f3")
    np.testing.assert_array_equal(loaded.weights, edited)
    assert loaded.bias == 0.1 and loaded.metrics == {"pairwise_accuracy": 0.71, "loss": 0.55}
    diff = store.diff_heads("ingest", "no-f3")
    expected = sorted([3, 17], key=lambda f: -abs(float(edited[f]) - float(base.weights[f])))
    assert diff["feature_id"].tolist() == expected
    np.testing.assert_allclose(
        diff["delta"], edited[expected].astype(float) - base.weights[expected].astype(float)
    )
    assert diff.set_index("feature_id").loc[17, "label"] == "verbosity"
    assert diff.attrs == {"bias_a": base.bias, "bias_b": 0.1}
    assert store.diff_heads("no-f3", "no-f3").empty


def test_versions_are_immutable(store):
    store.save_head("v1", np.ones(D_SAE))
    with pytest.raises(HeadVersionError, match="already exists"):
        store.save_head("v1", np.zeros(D_SAE))
    np.testing.assert_array_equal(store.load_head("v1").weights, np.ones(D_SAE))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("v", np.ones(D_SAE + 1)), {}, "has 33 weights"),
        (("v", np.full(D_SAE, np.nan)), {}, "NaN or infinity"),
        (("v", np.ones((2, D_SAE))), {}, "1-D"),
        (("../etc/passwd", np.ones(D_SAE)), {}, "is not valid"),
        (("", np.ones(D_SAE)), {}, "is not valid"),
        (
            ("v", np.ones(D_SAE)),
            {"parent": "missing"},
            "parent head version 'missing' does not exist",
        ),
        (("v", np.ones(D_SAE)), {"metrics": {"acc": float("inf")}}, "metric 'acc' must be finite"),
    ],
)
def test_bad_heads(store, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        store.save_head(*args, **kwargs)
    assert store.head_versions()["name"].tolist() == ["ingest"]


def test_unknown_head(store):
    with pytest.raises(HeadVersionError, match="'nope' does not exist"):
        store.load_head("nope")
