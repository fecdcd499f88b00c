"""Per-pair weights in Bradley-Terry training: a weight of 2 is the same pair counted twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarm.train.head import HeadTrainConfig, train_bt_head
from sarm.train.pairs import balanced_pair_weights, check_pair_weights


def _pairs(seed: int = 0, n_rows: int = 200, d: int = 6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, d)).astype(np.float32)
    true_w = rng.normal(size=d)
    c = rng.integers(0, n_rows, 300)
    r = (c + 1 + rng.integers(0, n_rows - 1, 300)) % n_rows
    # noisy labels: swap where the true reward disagrees with a logistic draw
    p = 1 / (1 + np.exp(-(x[c] - x[r]) @ true_w))
    keep = rng.random(300) < p
    return x, np.where(keep, c, r), np.where(keep, r, c)


def test_weight_two_equals_duplicated_pairs():
    x, c, r = _pairs()
    cfg = HeadTrainConfig(
        val_fraction=0.0, weight_decay=1e-2, max_epochs=2000, patience=2000, min_delta=0.0
    )
    weights = np.ones(len(c))
    weights[:100] = 2.0
    weighted = train_bt_head(x, c, r, cfg, pair_weights=weights)
    duplicated = train_bt_head(x, np.r_[c, c[:100]], np.r_[r, r[:100]], cfg)
    plain = train_bt_head(x, c, r, cfg)
    # the same optimum, reached by FISTA to ~1e-4 (its step sizes differ with the pair count)
    assert torch.allclose(weighted.weight, duplicated.weight, atol=5e-4)
    assert not torch.allclose(plain.weight, duplicated.weight, atol=1e-3)


def test_balanced_weights_give_each_label_equal_mass():
    labels = ["a"] * 6 + ["b"] * 2 + ["c"] * 2
    w = balanced_pair_weights(labels)
    assert w.mean() == pytest.approx(1.0)
    for label in "abc":
        mass = w[[i for i, x in enumerate(labels) if x == label]].sum()
        assert mass == pytest.approx(len(labels) / 3)


@pytest.mark.parametrize(
    "weights, message",
    [([1.0, 2.0], "3 pairs"), ([1.0, np.nan, 1.0], "finite"), ([0.0, 0.0, 0.0], "not all 0")],
)
def test_bad_weights_are_named(weights, message):
    with pytest.raises(ValueError, match=message):
        check_pair_weights(weights, 3)
