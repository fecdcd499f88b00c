"""Ingest with a tiny real SARM: rewards, latents and statistics against independent references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import make_tiny_sarm
from test_store_stats import reference_stats

from feature_store import FeatureStore, NotCachedError, StoreMismatchError, ingest
from feature_store.binding import Binding, bind
from feature_store.plan import data_fingerprint
from sarm.head import Head
from sarm.head import rewards as latent_rewards
from sarm.types import PreferenceGroup, responses_of

TOPICS = ["the weather", "a python bug", "a poem about cats", "tax rules", "a recipe", "chess"]


def make_groups(n: int = 9) -> list[PreferenceGroup]:
    groups = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = ({"role": "user", "content": f"Tell me about {topic} ({i})."},)
        good = f"Here is a careful answer about {topic}." + " More detail." * (i % 4)
        bad = f"No. {topic}?" if i % 2 else "I refuse."
        if i % 3 == 2:
            groups.append(
                PreferenceGroup(
                    f"g{i}",
                    prompt,
                    (good,),
                    (bad, bad + " Really."),
                    subset="bon",
                    kind="best_of_n",
                )
            )
        elif i % 3 == 1:
            groups.append(
                PreferenceGroup(
                    f"g{i}", prompt, (good, bad), subset="single", kind="single", label=1.0
                )
            )
        else:
            groups.append(PreferenceGroup(f"g{i}", prompt, (good,), (bad,), subset="chat"))
    return groups


@pytest.fixture(scope="module")
def sarm(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=0, d_sae=64, k=8)


@pytest.fixture(scope="module")
def indexed(sarm, tmp_path_factory):
    groups = make_groups()
    store = FeatureStore.open(tmp_path_factory.mktemp("ingest") / "store.duckdb")
    report = ingest(store, sarm, groups, batch_size=4, chunk_size=5, top_n=3, progress=False)
    yield store, groups, report
    store.close()


@pytest.fixture(scope="module")
def scored(sarm, indexed):
    """Independent reference: every response scored one at a time with SARM.score."""
    _, groups, _ = indexed
    plan = responses_of(groups)
    return [sarm.score(messages=e.conversation()) for e in plan]


def test_report_and_meta(indexed, sarm):
    store, groups, report = indexed
    n = sum(len(g.responses()) for g in groups)
    assert report.n_examples == n and report.n_computed == n and report.n_tokens > 0
    assert report.bytes_per_1000_examples == report.size_bytes * 1000 / n
    assert store.fingerprint() == sarm.fingerprint()
    assert store.summary()["complete"] and store.d_sae == sarm.d_sae


def test_rewards_and_latents_equal_score(indexed, scored):
    store, groups, _ = indexed
    frame = store.examples_frame(with_text=True)
    np.testing.assert_allclose(frame["reward"], [s.reward for s in scored], rtol=1e-5, atol=1e-5)
    assert frame["n_tokens"].tolist() == [s.n_tokens for s in scored]
    matrix = store.latent_matrix()
    for row, score in enumerate(scored):
        feats = matrix.indices[matrix.indptr[row] : matrix.indptr[row + 1]]
        vals = matrix.values[matrix.indptr[row] : matrix.indptr[row + 1]]
        assert feats.tolist() == sorted(score.activations)
        np.testing.assert_allclose(
            vals, [score.activations[f] for f in feats], rtol=1e-4, atol=1e-5
        )
    expected = [(g.group_id, role, idx, text) for g in groups for role, idx, text in g.responses()]
    got = list(
        zip(
            frame["group_id"],
            frame["role"],
            frame["response_index"],
            frame["response"],
            strict=True,
        )
    )
    assert got == expected


def test_stats_equal_pandas_on_scores(indexed, scored, sarm):
    store, _, _ = indexed
    roles = store.examples_frame()["role"].to_numpy()
    long = pd.DataFrame(
        [(i, f, a) for i, s in enumerate(scored) for f, a in s.activations.items()],
        columns=["example_id", "feature_id", "activation"],
    )
    long["role"] = roles[long["example_id"]]
    ref = reference_stats(long, roles, sarm.head.weight)
    got = store.features(order_by="feature_id", descending=False, limit=None).set_index(
        "feature_id"
    )
    for col in [
        "n_active",
        "frequency",
        "max_activation",
        "mean_contribution",
        "chosen_mean",
        "rejected_mean",
        "salience",
        "weight",
    ]:
        np.testing.assert_allclose(
            got[col].astype(float),
            ref[col].astype(float),
            rtol=1e-4,
            atol=1e-5,
            equal_nan=True,
            err_msg=col,
        )
    top_feature = int(got["n_active"].idxmax())
    sub = long[long.feature_id == top_feature].sort_values("activation", ascending=False)
    assert (
        store.top_examples(top_feature, 3)["example_id"].tolist()
        == sub["example_id"].head(3).tolist()
    )


def test_token_activations_cached(indexed, sarm):
    store, _, _ = indexed
    ex = store.example(2)
    feats = ex.features["feature_id"].head(2).tolist()
    with pytest.raises(NotCachedError, match="pass a loaded SARM"):
        store.token_activations(2, feats)
    got = store.token_activations(2, feats, sarm=sarm)
    direct = sarm.token_activations(ex.conversation(), feats)
    assert got.tokens == direct.tokens
    np.testing.assert_array_equal(got.values, direct.values)
    np.testing.assert_allclose(got.trajectory, direct.reward_trajectory, rtol=1e-6)
    np.testing.assert_allclose(
        got.feature(feats[0])[-1],
        ex.features.set_index("feature_id").loc[feats[0], "activation"],
        rtol=1e-4,
    )
    cached = store.token_activations(2, list(reversed(feats)))  # no model needed now
    np.testing.assert_array_equal(cached.values, got.values[:, ::-1])
    other = next(f for f in range(64) if f not in feats)
    with pytest.raises(NotCachedError, match=rf"for features \[{other}\] are not cached"):
        store.token_activations(2, [*feats, other])


def test_rerun_is_a_no_op(indexed, sarm):
    store, groups, _ = indexed
    before = store.examples_frame(with_text=True)
    report = ingest(store, sarm, groups, batch_size=4, chunk_size=5, top_n=3, progress=False)
    assert report.n_computed == 0
    pd.testing.assert_frame_equal(store.examples_frame(with_text=True), before)


def test_other_model_or_data_is_refused(indexed, tmp_path):
    store, groups, _ = indexed
    other = make_tiny_sarm(tmp_path, seed=1, d_sae=64, k=8)
    with pytest.raises(StoreMismatchError, match="different model"):
        ingest(store, other, groups, progress=False)
    sarm_fp = store.fingerprint()
    with pytest.raises(StoreMismatchError, match="different dataset"):
        fake = Binding(sarm_fp, 64, Head(np.zeros(64), 0.0), "0" * 16, 3, 5)
        bind(store, fake)


def test_resume_under_another_head_uses_the_store_head(sarm, tmp_path):
    groups = make_groups(4)
    plan = responses_of(groups)
    store = FeatureStore.open(tmp_path / "heads.duckdb")
    bind(store, Binding.from_source(sarm, data_fingerprint(plan), len(plan), 5))
    original = sarm.head
    sarm.set_head(Head(original.weight * 2, bias=1.0))
    try:
        with pytest.warns(UserWarning, match="stored rewards use the store's head"):
            ingest(store, sarm, groups, chunk_size=5, progress=False)
    finally:
        sarm.set_head(original)
    matrix = store.latent_matrix()
    weights, bias = store.head_weights()
    np.testing.assert_array_equal(weights, original.weight)
    np.testing.assert_allclose(
        store.examples_frame()["reward"], latent_rewards(matrix, weights, bias), rtol=1e-9
    )
    store.close()


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ([], "no examples"),
        (["not a group"], r"data\[0\] must be a PreferenceGroup"),
        (make_groups(2)[:1] * 2, "group_id 'g0' already used by data\\[0\\]"),
    ],
)
def test_bad_data(sarm, tmp_path, groups, match):
    with (
        FeatureStore.open(tmp_path / "bad.duckdb") as store,
        pytest.raises(ValueError, match=match),
    ):
        ingest(store, sarm, groups, progress=False)


def test_warm_token_cache_covers_top_examples(indexed, sarm):
    store, _, _ = indexed
    feats = store.features(order_by="frequency", limit=2)["feature_id"].tolist()
    tops = {f: store.top_examples(f, 2)["example_id"].tolist() for f in feats}
    computed = store.warm_token_cache(sarm, feats, per_feature=2, progress=False)
    assert 0 < computed <= len({e for ids in tops.values() for e in ids})
    for fid, ids in tops.items():
        for eid in ids:
            cached = store.token_activations(eid, [fid])  # no model: served from the cache
            direct = sarm.token_activations(store.example(eid).conversation(), [fid])
            np.testing.assert_array_equal(cached.values, direct.values)
    assert store.warm_token_cache(sarm, feats, per_feature=2, progress=False) == 0
