"""The bias audit's maths against independent references, with a real (tiny) SARM."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_sarm

from sarm.bias.counterfactual import (
    RewriteSample,
    counterfactual_shares,
    delta_rewards,
    feature_deltas,
    load_samples,
    sample_pairs,
    save_samples,
    summarize,
)
from sarm.bias.fix import apply_fix, carriers
from sarm.bias.observational import feature_shares, reward_correlation, within_prompt_effect
from sarm.bias.operators import rewrite
from sarm.bias.stats import cluster_bootstrap
from sarm.evaluate import PairIndex
from sarm.head import Head
from sarm.latents import SparseLatents

PROMPT = "Where is Paris?"
ANSWERS = [
    "Paris is the capital of France. It lies on the Seine.",
    "It is in Europe. The city is large. Many tourists visit it every year.",
    "France. Paris has about two million people. It is known for the Eiffel Tower.",
    "Paris lies in northern France. Its river is the Seine.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=3, d_sae=64, k=8)


@pytest.fixture(scope="module")
def markdown_sample(tiny):
    rewritten = [rewrite("markdown", a, 0, str(i)) for i, a in enumerate(ANSWERS)]
    convs = [
        [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": t}]
        for t in ANSWERS + rewritten
    ]
    pooled = tiny.pooled_latents(convs)
    n = len(ANSWERS)
    sample = RewriteSample(
        "markdown",
        np.arange(n),
        pooled.latents.take(np.arange(n)),
        pooled.latents.take(np.arange(n, 2 * n)),
        tuple(rewritten),
    )
    return sample, rewritten


def test_decomposition_sums_to_delta_r(tiny, markdown_sample):
    sample, rewritten = markdown_sample
    delta = delta_rewards(tiny.head, sample)
    terms = feature_deltas(tiny.head, sample)
    np.testing.assert_allclose(terms.sum(axis=1), delta, atol=1e-5, rtol=0)
    # independent reference: the model's own one-at-a-time scores
    ref = [
        tiny.score(PROMPT, b).reward - tiny.score(PROMPT, a).reward
        for a, b in zip(ANSWERS, rewritten, strict=True)
    ]
    np.testing.assert_allclose(delta, ref, atol=1e-4)
    assert np.abs(delta).max() > 1e-3  # the rewrite changed something


def test_counterfactual_shares_sum_to_one(tiny, markdown_sample):
    sample, _ = markdown_sample
    table = counterfactual_shares(tiny.head, sample)
    assert table["share"].sum() == pytest.approx(1.0, abs=1e-9)
    assert table.attrs["mean_delta"] == pytest.approx(delta_rewards(tiny.head, sample).mean())
    assert (np.diff(table["share"].to_numpy()) <= 0).all()


def test_summary_figures(tiny, markdown_sample):
    sample, _ = markdown_sample
    delta = delta_rewards(tiny.head, sample)
    index = PairIndex.from_arrays([0, 1], [2, 3])
    rewards = np.array([1.0, 0.0, 0.5, 0.2])
    out = summarize(tiny.head, sample, index, None, top=3)
    assert out["median"] == pytest.approx(np.median(delta))
    assert out["interval90"] == pytest.approx(list(np.quantile(delta, [0.05, 0.95])))
    assert out["flips"] is None and len(out["top_features"]) == 3
    two = RewriteSample(
        "m", np.array([0, 1]), sample.original.take([0, 1]), sample.rewritten.take([0, 1])
    )
    d2 = delta_rewards(tiny.head, two)
    flips = summarize(tiny.head, two, index, rewards)["flips"]
    margins = np.array([1.0 - 0.5, 0.0 - 0.2])
    assert flips == int(((margins > 0) & (margins <= d2)).sum())


def test_samples_round_trip(tmp_path, markdown_sample, tiny):
    sample, _ = markdown_sample
    path = tmp_path / "s.npz"
    save_samples(path, {"audit": {"markdown": sample}}, {"d_sae": 64, "seed": 0})
    splits, meta = load_samples(path)
    back = splits["audit"]["markdown"]
    assert meta == {"d_sae": 64, "seed": 0} and back.texts == sample.texts
    np.testing.assert_array_equal(delta_rewards(tiny.head, back), delta_rewards(tiny.head, sample))


def _random_latents(n: int, d: int, seed: int) -> SparseLatents:
    rng = np.random.default_rng(seed)
    dense = rng.random((n, d)) * (rng.random((n, d)) < 0.3)
    return SparseLatents.from_dense(dense.astype(np.float32))


def test_feature_shares_are_an_exact_split_of_the_slope():
    latents = _random_latents(200, 16, 0)
    head = Head(np.random.default_rng(1).normal(size=16).astype(np.float32), 0.3)
    p = np.random.default_rng(2).poisson(2.0, size=200).astype(float)
    table = feature_shares(p, latents, head)
    slope = np.polyfit(p, head.rewards(latents), 1)[0]  # independent least squares
    assert table.attrs["beta"] == pytest.approx(slope, rel=1e-9)
    assert table["share"].sum() == pytest.approx(1.0, rel=1e-9)
    dense = latents.dense().astype(np.float64) * head.weights.astype(
        np.float64
    )  # each feature's contribution column
    f = int(table["feature_id"][0])
    assert table["beta"][0] == pytest.approx(np.polyfit(p, dense[:, f], 1)[0], rel=1e-9)


def test_reward_correlation_and_within_prompt_effect():
    rng = np.random.default_rng(0)
    p = rng.normal(size=400)
    r = 0.5 * p + rng.normal(size=400)
    out = reward_correlation(p, r)
    assert out["corr"] == pytest.approx(np.corrcoef(p, r)[0, 1])
    assert out["ci95"][0] < out["corr"] < out["ci95"][1]
    index = PairIndex.from_arrays(np.arange(0, 400, 2), np.arange(1, 400, 2))
    wp = within_prompt_effect(p, r, index)
    dp, dm = p[0::2] - p[1::2], r[0::2] - r[1::2]
    assert wp["slope"] == pytest.approx(np.polyfit(dp, dm, 1)[0])
    assert wp["corr"] == pytest.approx(np.corrcoef(dp, dm)[0, 1])
    assert wp["slope_ci95"][0] < wp["slope"] < wp["slope_ci95"][1]
    assert wp["n_pairs"] == 200 and wp["n_differing"] == 200


def test_cluster_bootstrap_resamples_whole_units():
    x = np.array([0.0, 1.0, 0.0, 1.0, 2.0, 3.0])
    y = 2.0 * x  # every resample has slope exactly 2
    out = cluster_bootstrap(x, y, np.array([0, 0, 1, 1, 2, 2]), n_resamples=50)
    assert out["slope"] == pytest.approx([2.0, 2.0])


def test_sample_pairs_is_seeded_and_bounded():
    a = sample_pairs(np.arange(100), 10, seed=3)
    assert (a == sample_pairs(np.arange(100), 10, seed=3)).all() and len(set(a)) == 10
    assert (sample_pairs(np.arange(5), 10, seed=3) == np.arange(5)).all()
    with pytest.raises(ValueError, match=">= 1"):
        sample_pairs(np.arange(5), 0, seed=0)


def test_carriers_and_fix_use_the_one_head_edit(tiny, markdown_sample):
    sample, _ = markdown_sample
    table = counterfactual_shares(tiny.head, sample)
    if table.attrs["mean_delta"] <= 0:  # make the payment positive for this test
        head = tiny.head.edit({int(f): -tiny.head.weight_of(int(f)) for f in table["feature_id"]})
        table = counterfactual_shares(head, sample)
    else:
        head = tiny.head
    picked = carriers(table, coverage=0.5, max_features=3)
    assert 1 <= len(picked) <= 3 and picked == [int(f) for f in table["feature_id"][: len(picked)]]
    fixed, item = apply_fix(head, picked, 0.0)
    assert item.spec().startswith("scale:0") and all(fixed.weight_of(f) == 0.0 for f in picked)
    before, after = delta_rewards(head, sample), delta_rewards(fixed, sample)
    terms = feature_deltas(head, sample)
    np.testing.assert_allclose(after, before - terms[:, picked].sum(axis=1), atol=1e-6)
    empty = table.copy()
    empty.attrs["mean_delta"] = -1.0
    assert carriers(empty) == []


def test_too_little_support_gives_no_figure(tiny, markdown_sample):
    from sarm.bias.observational import MIN_SUPPORT, property_audit

    p = np.zeros(200)
    p[[0, 2, 4, 6]] = 1.0  # four chosen responses have the property: four pairs differ
    r = np.random.default_rng(0).normal(size=200)
    index = PairIndex.from_arrays(np.arange(0, 200, 2), np.arange(1, 200, 2))
    wp = within_prompt_effect(p, r, index)
    assert wp["n_differing"] == 4 < MIN_SUPPORT and wp["slope"] is None and wp["ci95"] is None
    latents = _random_latents(200, 16, 0)
    head = Head(np.ones(16, np.float32))
    out = property_audit(p, latents, head, index)
    assert out["reward_corr"]["corr"] is None and out["top_features"] == []
    p[:MIN_SUPPORT] = 1.0
    assert property_audit(p, latents, head, index)["reward_corr"]["corr"] is not None


def test_examples_decompose_their_delta_r(tiny, markdown_sample):
    from sarm.bias.counterfactual import examples

    sample, rewritten = markdown_sample
    out = examples(tiny.head, sample, ANSWERS, k=3, top=2)
    delta = delta_rewards(tiny.head, sample)
    assert [e["after"] for e in out] == rewritten[:3]
    for j, e in enumerate(out):
        assert e["delta_r"] == pytest.approx(delta[j])
        assert sum(t["term"] for t in e["terms"]) + e["rest"] == pytest.approx(delta[j], abs=1e-9)
        assert len(e["terms"]) <= 2
