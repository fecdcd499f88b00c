"""Sparse latents, the head's rewards and incremental edits against dense numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.head import Head
from sarm.head import rewards as latent_rewards
from sarm.latents import SparseLatents


def random_latents(n=50, d=40, k=5, seed=0):
    rng = np.random.default_rng(seed)
    rows_i = [np.sort(rng.choice(d, size=rng.integers(0, k + 1), replace=False)) for _ in range(n)]
    rows_v = [rng.normal(size=len(i)).astype(np.float32) for i in rows_i]
    return SparseLatents.from_rows(rows_i, rows_v, d), rng


def test_rewards_match_dense():
    lat, rng = random_latents()
    w = rng.normal(size=lat.d_sae)
    dense = lat.dense().astype(np.float64)
    assert np.allclose(latent_rewards(lat, w, 0.25), dense @ w + 0.25)
    assert lat.n == 50 and (np.diff(lat.indptr) == 0).any(), "fixture should have empty rows"


def test_columns_match_dense():
    lat, _ = random_latents(seed=1)
    dense = lat.dense()
    for f in range(lat.d_sae):
        rows, vals = lat.column(f)
        assert np.array_equal(rows, np.nonzero(dense[:, f])[0])
        assert np.array_equal(vals, dense[rows, f])


def test_editor_matches_full_recompute():
    lat, rng = random_latents(seed=2)
    w = rng.normal(size=lat.d_sae).astype(np.float32)  # a stored head is float32
    head = Head(w, bias=-1.0)
    overrides = {3: 0.0, 7: 2.5, 11: float(w[11])}
    new_w = w.copy()
    for f, v in overrides.items():
        new_w[f] = v
    assert np.allclose(head.edit(overrides).rewards(lat), lat.dense() @ new_w - 1.0)
    assert np.array_equal(head.edit(overrides).weights, new_w)
    assert np.array_equal(head.edit({}).rewards(lat), head.rewards(lat))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"indptr": [1, 2], "indices": [0], "values": [1.0]}, "starting at 0"),
        ({"indptr": [0, 2], "indices": [0], "values": [1.0]}, "end at len"),
        ({"indptr": [0, 1], "indices": [9], "values": [1.0]}, "feature ids"),
        ({"indptr": [0, 1], "indices": [0], "values": [np.nan]}, "finite"),
    ],
)
def test_bad_arrays(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseLatents(d_sae=4, **kwargs)


def test_example_ids_take_and_topk():
    lat, _ = random_latents(seed=4)
    named = SparseLatents(lat.indptr, lat.indices, lat.values, lat.d_sae, np.arange(50) * 3)
    assert named.row_of(30) == 10
    with pytest.raises(LookupError, match="example 31"):
        named.row_of(31)
    part = named.take([7, 2, 7])
    assert part.example_ids.tolist() == [21, 6, 21]
    np.testing.assert_array_equal(part.dense(), lat.dense()[[7, 2, 7]])
    values = np.array([[0.5, 0.0, -2.0], [0.0, 0.0, 0.0]], np.float32)
    topk = SparseLatents.from_topk(values, np.array([[3, 1, 0], [2, 1, 0]]), 4)
    assert topk.indptr.tolist() == [0, 2, 2] and topk.indices.tolist() == [3, 0]
    np.testing.assert_array_equal(SparseLatents.from_dense(lat.dense()).dense(), lat.dense())
