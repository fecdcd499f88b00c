"""The one head: rewards and contributions against dense references, edits, caching, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarm.head import Head, as_weight, contributions, rewards
from sarm.latents import SparseLatents


def random_latents(n=40, d=30, k=6, seed=0) -> SparseLatents:
    rng = np.random.default_rng(seed)
    rows_i = [np.sort(rng.choice(d, size=rng.integers(0, k + 1), replace=False)) for _ in range(n)]
    rows_v = [rng.normal(size=len(i)).astype(np.float32) for i in rows_i]
    return SparseLatents.from_rows(rows_i, rows_v, d, example_ids=np.arange(100, 100 + n))


def test_rewards_and_contributions_match_dense():
    lat = random_latents()
    w = np.random.default_rng(1).normal(size=lat.d_sae).astype(np.float32)
    head = Head(w, bias=-0.75)
    dense = lat.dense().astype(np.float64)
    np.testing.assert_allclose(head.rewards(lat), dense @ w.astype(np.float64) - 0.75, atol=1e-12)
    terms = head.contributions(lat)
    np.testing.assert_allclose(terms, dense[lat.row_ids, lat.indices] * w[lat.indices], atol=0)
    sums = np.bincount(lat.row_ids, weights=terms, minlength=lat.n) - 0.75
    np.testing.assert_array_equal(sums, head.rewards(lat))
    np.testing.assert_array_equal(rewards(lat, w, -0.75), head.rewards(lat))
    np.testing.assert_array_equal(contributions(lat, w), terms)


def test_edit_is_incremental_and_exact():
    lat = random_latents(seed=2).warm()
    w = np.random.default_rng(3).normal(size=lat.d_sae).astype(np.float32)
    base = Head(w, 0.5, name="v1")
    edited = base.edit({4: 0.0, 9: 2.5}).edit({4: -1.25})
    assert edited.overrides == {4: -1.25, 9: 2.5} and edited.name == "v1"
    ref = w.copy()
    ref[4], ref[9] = -1.25, 2.5
    np.testing.assert_allclose(edited.rewards(lat), lat.dense() @ ref.astype(np.float64) + 0.5)
    np.testing.assert_array_equal(edited.weights, ref)
    assert not edited.weights.flags.writeable and not base.weight.flags.writeable
    # the base rewards are computed once and shared by every edit of the same base
    assert lat in base._base_rewards and edited._base_rewards is base._base_rewards
    back = edited.edit({4: float(w[4]), 9: float(w[9])})
    assert back.overrides == {} and np.array_equal(back.rewards(lat), base.rewards(lat))
    assert edited.base().overrides == {} and edited.base().hash() == base.hash()


def test_take_applied_changes_and_hash():
    w = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    head = Head(w, 0.25, {0: 7.0}, name="ingest")
    taken = head.take(np.array([0.5, 0.1, 2.0, 3.0]), [1, 2, 3])
    assert taken.overrides == {0: 7.0, 1: as_weight(0.1), 3: 3.0}
    assert [c[0] for c in taken.changes()] == [0, 3, 1]  # by |new - old|
    flat = taken.applied("v2")
    assert flat.overrides == {} and flat.name == "v2" and flat.hash() == taken.hash()
    assert taken.changed_weights(head) == {1: (as_weight(0.1), -1.0), 3: (3.0, 0.0)}
    assert Head(w, 0.25).hash() != Head(w, 0.5).hash() != head.hash()


def test_save_load_round_trip(tmp_path):
    head = Head(torch.tensor([[0.5, -1.0, 2.0]]), 0.25, {1: 4.0})
    path = head.save(tmp_path / "h" / "head.safetensors")
    back = Head.load(tmp_path / "h")
    np.testing.assert_array_equal(back.weight, [0.5, 4.0, 2.0])
    assert back.bias == 0.25 and back.hash() == head.hash() and path.is_file()
    assert "score.bias" not in Head(np.ones(3)).to_tensors()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": np.ones((2, 3))}, "shape"),
        ({"weight": np.array([1.0, np.nan])}, "non-finite"),
        ({"weight": np.ones(3), "bias": float("inf")}, "bias must be finite"),
        ({"weight": np.ones(3), "overrides": {3: 1.0}}, "out of range"),
        ({"weight": np.ones(3), "overrides": {True: 1.0}}, "integers"),
        ({"weight": np.ones(3), "overrides": {0: "x"}}, "number"),
    ],
)
def test_bad_heads(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Head(**kwargs)


def test_wrong_latents():
    with pytest.raises(
        ValueError, match=r"weights of shape \(3,\) but the latents have 30 features"
    ):
        Head(np.ones(3)).contributions(random_latents())
    with pytest.raises(TypeError, match="SparseLatents"):
        Head(np.ones(3)).rewards(np.ones((2, 3)))
