"""Edited rewards from the changed columns only equal the full recompute (sarm.head.rewards)."""

from __future__ import annotations

import numpy as np
import pytest

from sarm.head import Head, rewards
from sarm.latents import SparseLatents

D_SAE, NNZ = 512, 16


def make_latents(n: int, seed: int = 0) -> SparseLatents:
    """``n`` rows of ``NNZ`` distinct features; features 0..59 fire in about a third of rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        hot = np.flatnonzero(rng.random(60) < 0.3)[: NNZ // 2]
        cold = rng.choice(np.arange(60, D_SAE), size=NNZ - len(hot), replace=False)
        rows.append(np.sort(np.concatenate([hot, cold])))
    values = [rng.gamma(2.0, 1.0, size=NNZ) * rng.choice([-1, 1], size=NNZ) for _ in rows]
    return SparseLatents.from_rows(rows, values, D_SAE)


@pytest.fixture(scope="module")
def latents():
    return make_latents(3000)


@pytest.mark.parametrize("changed", [1, 3, 50])
def test_incremental_equals_full_recompute(latents, changed):
    rng = np.random.default_rng(changed)
    head = Head(rng.normal(0, 0.1, D_SAE), bias=0.25)
    head.rewards(latents)  # cache the base rewards first, as the editor does
    features = rng.choice(60, size=changed, replace=False)  # the frequent columns: the slow case
    edited = head.edit({int(f): float(rng.normal()) for f in features})
    assert len(edited.overrides) == changed
    want = rewards(latents, edited.weights, edited.bias)
    np.testing.assert_allclose(edited.rewards(latents), want, rtol=0, atol=1e-9)
    assert not np.allclose(want, head.rewards(latents))  # the edit did change rewards


def test_sparse_edit_and_successive_edits(latents):
    rng = np.random.default_rng(7)
    head = Head(rng.normal(0, 0.1, D_SAE))
    rare = [500, 501]  # cold columns: the scatter path (few rows touched)
    first = head.edit({500: 2.0, 501: -1.0})
    second = first.edit({500: 0.5, 7: 3.0})  # replaces one override, adds a frequent one
    for h in (first, second):
        want = rewards(latents, h.weights, h.bias)
        np.testing.assert_allclose(h.rewards(latents), want, rtol=0, atol=1e-9)
    starts, _, _ = latents.csc()
    touched = sum(starts[f + 1] - starts[f] for f in rare)
    assert 0 < touched * 8 < latents.n


def test_csc_matches_the_dense_matrix(latents):
    dense = latents.dense()
    starts, rows, values = latents.csc()
    assert starts[-1] == latents.nnz and len(starts) == D_SAE + 1
    for f in [3, 0, 511, 42]:
        expect = np.flatnonzero(dense[:, f])
        np.testing.assert_array_equal(rows[starts[f] : starts[f + 1]], expect)
        np.testing.assert_array_equal(values[starts[f] : starts[f + 1]], dense[expect, f])
    one_rows, one_values = latents.column(42)
    np.testing.assert_array_equal(one_rows, np.flatnonzero(dense[:, 42]))
    np.testing.assert_array_equal(one_values, dense[one_rows, 42])
