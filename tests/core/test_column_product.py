"""``add_column_product`` (the head edit's kernel) against a dense float64 reference, on every path."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.column_product import BLOCK_ROWS, add_column_product
from sarm.head import Head, rewards
from sarm.latents import SparseLatents


def frequent_latents(n: int, d_sae: int = 64, nnz: int = 4, seed: int = 0) -> SparseLatents:
    """``n`` rows of ``nnz`` distinct features drawn from ``d_sae``: every column is frequent."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.random((n, d_sae)).argsort(axis=1)[:, :nnz], axis=1)
    values = rng.gamma(2.0, 1.0, size=(n, nnz)) * rng.choice([-1.0, 1.0], size=(n, nnz))
    indptr = np.arange(0, n * nnz + 1, nnz)
    return SparseLatents(indptr, ids.ravel(), values.astype(np.float32).ravel(), d_sae)


def dense_reference(latents: SparseLatents, features: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    return latents.dense()[:, features].astype(np.float64) @ coefs


@pytest.fixture(scope="module")
def latents() -> SparseLatents:
    return frequent_latents(5000)


@pytest.mark.parametrize(
    ("block_rows", "min_piece"),
    [
        (BLOCK_ROWS, 1),  # one block: a single scatter over the whole vector
        (1000, 1),  # blocked, n a multiple of the block size
        (777, 1),  # blocked, a short last block
        (64, 10**9),  # many blocks, but pieces too small: falls back to one scatter
    ],
)
def test_equals_dense_reference(latents, block_rows, min_piece):
    rng = np.random.default_rng(block_rows)
    features = rng.choice(latents.d_sae, size=20, replace=False)
    coefs = rng.normal(size=20)
    start = rng.normal(size=latents.n)
    got = add_column_product(
        start.copy(), latents, features, coefs, block_rows=block_rows, min_piece=min_piece
    )
    np.testing.assert_allclose(got, start + dense_reference(latents, features, coefs), atol=1e-9)


def test_sparse_columns_take_the_scatter_path():
    latents = frequent_latents(4000, d_sae=4000, nnz=2)  # each column has ~2 rows
    features, coefs = np.array([5, 17, 3999]), np.array([1.5, -2.0, 0.25])
    starts = latents.csc()[0]
    assert int(sum(starts[f + 1] - starts[f] for f in features)) * 8 < latents.n
    got = add_column_product(np.zeros(latents.n), latents, features, coefs)
    np.testing.assert_allclose(got, dense_reference(latents, features, coefs), atol=1e-12)


def test_nothing_selected_leaves_out_alone(latents):
    out = np.arange(latents.n, dtype=np.float64)
    add_column_product(out, latents, np.array([], dtype=np.int64), np.array([]))
    np.testing.assert_array_equal(out, np.arange(latents.n))


def test_bad_shapes_are_named(latents):
    with pytest.raises(ValueError, match="out must be float64"):
        add_column_product(np.zeros(3), latents, np.array([1]), np.array([1.0]))
    with pytest.raises(ValueError, match="features and coefs"):
        add_column_product(np.zeros(latents.n), latents, np.array([1, 2]), np.array([1.0]))


def test_head_edit_past_one_block_equals_full_recompute():
    """At the default block size a dataset of more than one block takes the blocked path."""
    latents = frequent_latents(BLOCK_ROWS + 5000, d_sae=32, nnz=3, seed=3)
    rng = np.random.default_rng(4)
    head = Head(rng.normal(0, 0.1, 32), bias=-0.5)
    head.rewards(latents)
    edited = head.edit({f: float(rng.normal()) for f in range(8)})
    want = rewards(latents, edited.weights, edited.bias)
    np.testing.assert_allclose(edited.rewards(latents), want, rtol=0, atol=1e-9)
