"""The default's shipped bias audit agrees with its shipped rewrites and head (no model run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sarm import cachedir
from sarm.bias.counterfactual import delta_rewards, feature_deltas, load_samples
from sarm.bias.operators import OPERATORS
from sarm.head import Head

ROOT = cachedir.shipped_default_dir()


@pytest.fixture(scope="module")
def shipped():
    report = json.loads((ROOT / "bias_audit.json").read_text())
    splits, meta = load_samples(ROOT / "bias_samples.npz")
    return report, splits, meta, Head.load(ROOT)


def test_report_is_for_the_shipped_head_and_every_operator(shipped):
    report, splits, meta, head = shipped
    assert report["head"] == head.hash() == meta["head"]
    assert set(report["operators"]) == set(OPERATORS) == set(splits["audit"])
    assert report["pairs_per_operator"] == meta["pairs_per_operator"]


def test_report_medians_are_the_rewrites_own(shipped):
    report, splits, _, head = shipped
    for name, sample in splits["audit"].items():
        delta = delta_rewards(head, sample)
        figures = report["operators"][name]["audit"]
        assert figures["n"] == len(sample.pairs)
        assert figures["median"] == pytest.approx(float(np.median(delta)), abs=1e-12)
        np.testing.assert_allclose(feature_deltas(head, sample).sum(axis=1), delta, atol=1e-5)
        assert sample.texts[0] == report["operators"][name]["examples"][0]["after"]
