"""The store's one SQL copy of the head formula, checked against ``Head.contributions``."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_sarm
from test_store_ingest import make_groups

from feature_store import FeatureStore, ingest
from sarm.head import Head


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    sarm = make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=4, d_sae=64, k=8)
    sarm.set_head(Head(sarm.head.weight, bias=0.375))
    path = tmp_path_factory.mktemp("view") / "store.duckdb"
    with FeatureStore.open(path) as s:
        ingest(s, sarm, make_groups(), batch_size=4, chunk_size=4, top_n=3, progress=False)
    s = FeatureStore.open(path, read_only=True)
    yield s
    s.close()


def _view(store: FeatureStore) -> np.ndarray:
    with store.read("reading the view") as cur:
        rows = cur.execute(
            "SELECT example_id, feature_id, contribution FROM contributions "
            "ORDER BY example_id, feature_id"
        ).fetchall()
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def test_view_equals_head_contributions(store):
    latents = store.latent_matrix()
    weights, bias = store.head_weights()
    head = Head(weights, bias)
    view = _view(store)
    assert len(view) == latents.nnz > 0
    np.testing.assert_array_equal(view[:, 0], latents.example_ids[latents.row_ids])
    np.testing.assert_array_equal(view[:, 1], latents.indices)
    # float32 activation * float32 weight: exact in float64 both ways
    np.testing.assert_array_equal(view[:, 2], head.contributions(latents))


def test_stored_rewards_are_the_head_rewards(store):
    latents = store.latent_matrix()
    weights, bias = store.head_weights()
    frame = store.examples_frame()
    np.testing.assert_allclose(frame["reward"], Head(weights, bias).rewards(latents), atol=1e-12)
    sums = np.bincount(latents.row_ids, weights=_view(store)[:, 2], minlength=latents.n) + bias
    np.testing.assert_allclose(frame["reward"], sums, atol=1e-12)


def test_example_page_contributions_come_from_the_view(store):
    latents = store.latent_matrix()
    head = Head(*store.head_weights())
    row = int(np.argmax(np.diff(latents.indptr)))
    example = store.example(int(latents.example_ids[row]))
    ids = latents.row(row)[0].tolist()
    by_feature = dict(zip(ids, head.contributions(latents.take([row])), strict=True))
    features = example.features
    got = dict(zip(features["feature_id"], features["contribution"], strict=True))
    assert got == pytest.approx(by_feature, abs=0)
    assert example.reward == pytest.approx(sum(got.values()) + head.bias, abs=1e-9)
    top = store.top_examples(int(example.features["feature_id"].iloc[0]), limit=3)
    fid = int(example.features["feature_id"].iloc[0])
    for eid, c in zip(top["example_id"], top["contribution"], strict=True):
        r = latents.row_of(int(eid))
        ids, _ = latents.row(r)
        assert c == head.contributions(latents.take([r]))[list(ids).index(fid)]


def test_quantile_examples_use_the_same_formula(store):
    latents = store.latent_matrix()
    head = Head(*store.head_weights())
    terms = head.contributions(latents)
    fid = int(np.bincount(latents.indices).argmax())
    frame = store.quantile_examples(fid)
    assert len(frame) > 0
    for eid, c in zip(frame["example_id"], frame["contribution"], strict=True):
        r = latents.row_of(int(eid))
        lo = latents.indptr[r]
        ids, _ = latents.row(r)
        assert c == terms[lo + list(ids).index(fid)]
