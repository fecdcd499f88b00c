"""Feature statistics, example selections and bulk reads against numpy/pandas references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.synthetic import store_from_arrays
from sarm.head import rewards as latent_rewards
from sarm.types import PreferenceGroup

D_SAE = 48
TOP_N = 4
BANDS, PER_BAND, BINS = 4, 3, 20


def make_groups() -> list[PreferenceGroup]:
    """Pairs, best-of-4 groups and single responses (every role and kind)."""
    groups = []
    for i in range(30):
        prompt = ({"role": "user", "content": f"question {i}"},)
        if i % 3 == 0:
            groups.append(PreferenceGroup(f"p{i}", prompt, ("good",), ("bad",), subset="chat"))
        elif i % 3 == 1:
            groups.append(
                PreferenceGroup(
                    f"b{i}", prompt, ("best",), ("w1", "w2", "w3"), subset="math", kind="best_of_n"
                )
            )
        else:
            groups.append(
                PreferenceGroup(
                    f"s{i}",
                    prompt,
                    ("only", "other"),
                    subset="single",
                    kind="single",
                    label=float(i % 2),
                )
            )
    return groups


def make_latents(n: int, rng: np.random.Generator):
    """Sparse rows over features 0..39 (40..47 never fire), some values tied, some negative."""
    indices, values = [], []
    for _ in range(n):
        k = int(rng.integers(1, 9))
        idx = rng.choice(40, size=k, replace=False)
        val = rng.normal(1.0, 1.0, size=k).astype(np.float32)
        val[rng.random(k) < 0.2] = np.float32(0.5)  # ties: ranking falls back to example_id
        indices.append(idx.astype(np.int32))
        values.append(val)
    return indices, values


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(7)
    groups = make_groups()
    n = sum(len(g.responses()) for g in groups)
    indices, values = make_latents(n, rng)
    weights = rng.normal(0, 1, D_SAE).astype(np.float32)
    path = tmp_path_factory.mktemp("stats") / "store.duckdb"
    store = store_from_arrays(
        path, groups, indices, values, weights, 0.25, chunk_size=7, top_n=TOP_N
    )
    roles = [role for g in groups for role, _, _ in g.responses()]
    long = pd.DataFrame(
        {
            "example_id": np.repeat(np.arange(n), [len(i) for i in indices]),
            "feature_id": np.concatenate(indices),
            "activation": np.concatenate(values).astype(np.float64),
        }
    )
    long["role"] = np.asarray(roles)[long["example_id"]]
    yield store, long, np.asarray(roles), weights, indices, values
    store.close()


def reference_stats(long: pd.DataFrame, roles: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
    """Feature statistics computed from the long latents frame (pandas only)."""
    d_sae = len(weights)
    n, n_c, n_r = len(roles), (roles == "chosen").sum(), (roles == "rejected").sum()
    g = long.groupby("feature_id")["activation"]
    ref = pd.DataFrame(
        {
            "n_active": g.size(),
            "total": g.sum(),
            "mean_activation": g.mean(),
            "max_activation": g.max(),
            "min_activation": g.min(),
        }
    )
    ref = ref.reindex(range(d_sae))
    ref["n_active"] = ref["n_active"].fillna(0)
    ref["total"] = ref["total"].fillna(0)
    by_role = long.pivot_table(
        index="feature_id", columns="role", values="activation", aggfunc="sum"
    )
    by_role = by_role.reindex(range(d_sae)).fillna(0)
    ref["frequency"] = ref["n_active"] / n
    ref["weight"] = weights.astype(np.float64)
    ref["mean_contribution"] = ref["weight"] * ref["total"] / n
    ref["chosen_mean"] = by_role["chosen"] / n_c
    ref["rejected_mean"] = by_role["rejected"] / n_r
    m = ref["total"] / n
    denom = ref["chosen_mean"] + ref["rejected_mean"] + 2 * m
    ref["salience"] = ((ref["chosen_mean"] - ref["rejected_mean"]) / denom).where(denom != 0)
    return ref


def test_feature_stats_match_pandas(built):
    store, long, roles, weights, _, _ = built
    ref = reference_stats(long, roles, weights)
    got = store.features(order_by="feature_id", descending=False, limit=None).set_index(
        "feature_id"
    )
    assert list(got.index) == list(range(D_SAE))
    for col in [
        "n_active",
        "frequency",
        "mean_activation",
        "max_activation",
        "min_activation",
        "weight",
        "mean_contribution",
        "chosen_mean",
        "rejected_mean",
        "salience",
    ]:
        np.testing.assert_allclose(
            got[col].astype(float),
            ref[col].astype(float),
            rtol=1e-9,
            atol=1e-12,
            equal_nan=True,
            err_msg=col,
        )
    assert got.loc[40:, "n_active"].eq(0).all() and got.loc[40:, "mean_activation"].isna().all()


def test_mean_contributions_sum_to_mean_reward(built):
    store, *_ = built
    feats = store.features(limit=None)
    rewards = store.examples_frame()["reward"]
    _, bias = store.head_weights()
    assert feats["mean_contribution"].sum() + bias == pytest.approx(rewards.mean(), rel=1e-9)


def test_sorting_and_paging(built):
    store, long, roles, weights, _, _ = built
    ref = reference_stats(long, roles, weights)
    expected = ref["mean_contribution"].abs().sort_values(ascending=False, kind="stable")
    expected = pd.Series(expected.index).iloc[np.lexsort((expected.index, -expected.to_numpy()))]
    page1 = store.features(order_by="abs_contribution", limit=10)
    page2 = store.features(order_by="abs_contribution", limit=10, offset=10)
    assert page1["feature_id"].tolist() + page2["feature_id"].tolist() == expected.tolist()[:20]
    freq = store.features(order_by="frequency", min_frequency=0.1, limit=None)
    assert freq["frequency"].is_monotonic_decreasing and (freq["frequency"] >= 0.1).all()
    assert (
        len(freq) == int((ref["frequency"] >= 0.1).sum()) == store.count_features(min_frequency=0.1)
    )


def reference_ranked(long: pd.DataFrame, fid: int) -> pd.DataFrame:
    sub = long[long.feature_id == fid].sort_values(
        ["activation", "example_id"], ascending=[False, True]
    )
    return sub.assign(rank=np.arange(1, len(sub) + 1)).reset_index(drop=True)


def test_top_examples_match_reference(built):
    store, long, _, weights, _, _ = built
    examples = store.examples_frame(with_text=True).set_index("example_id")
    for fid in range(0, 40, 3):
        ref = reference_ranked(long, fid)
        for limit in (3, TOP_N, 10):  # 10 > TOP_N: ranked live from the latents table
            got = store.top_examples(fid, limit=limit)
            want = ref.head(limit)
            assert got["example_id"].tolist() == want["example_id"].tolist()
            assert got["rank"].tolist() == list(range(1, len(want) + 1))
            np.testing.assert_allclose(got["activation"], want["activation"], rtol=1e-7)
            np.testing.assert_allclose(
                got["contribution"], want["activation"] * float(weights[fid]), rtol=1e-6
            )
            assert got["response"].tolist() == examples.loc[want["example_id"], "response"].tolist()
    assert store.top_examples(45).empty


def test_quantile_examples_match_reference(built):
    store, long, *_ = built
    for fid in range(0, 40, 5):
        ref = reference_ranked(long, fid)
        rest = ref[ref["rank"] > TOP_N].copy()
        expected = []
        if len(rest):
            n = len(ref)
            rest["band"] = 1 + np.floor((rest["rank"] - TOP_N - 1) * BANDS / (n - TOP_N)).astype(
                int
            )
            for band, part in rest.groupby("band"):
                size = len(part)
                picks = sorted(
                    {int(np.floor((j + 0.5) * size / PER_BAND)) for j in range(PER_BAND)}
                )
                expected += [(band, int(part.iloc[p]["example_id"])) for p in picks]
        got = store.quantile_examples(fid)
        assert list(zip(got["band"], got["example_id"], strict=True)) == expected


def test_histograms_match_numpy(built):
    store, long, *_ = built
    for fid in (0, 7, 39):
        act = long.loc[long.feature_id == fid, "activation"].to_numpy()
        lo, hi = act.min(), act.max()
        bins = np.minimum(np.floor((act - lo) / (hi - lo) * BINS).astype(int), BINS - 1)
        got = store.feature_histogram(fid)
        assert got["count"].tolist() == np.bincount(bins, minlength=BINS).tolist()
        assert got["lo"].iloc[0] == pytest.approx(lo) and got["hi"].iloc[-1] == pytest.approx(hi)
    assert store.feature_histogram(44).empty


def test_latent_matrix_and_examples(built):
    store, _, roles, weights, indices, values = built
    m = store.latent_matrix()
    assert m.example_ids.tolist() == list(range(len(roles)))
    for row in (0, 5, len(roles) - 1):
        got = m.indices[m.indptr[row] : m.indptr[row + 1]]
        order = np.argsort(indices[row])
        assert got.tolist() == indices[row][order].tolist()
        np.testing.assert_array_equal(
            m.values[m.indptr[row] : m.indptr[row + 1]], values[row][order]
        )
    frame = store.examples_frame()
    assert frame["role"].tolist() == roles.tolist()
    np.testing.assert_allclose(latent_rewards(m, weights, 0.25), frame["reward"], rtol=1e-12)
    edited = weights.copy()
    edited[3] = 0.0
    manual = [
        float(v.astype(np.float64) @ edited[i].astype(np.float64)) + 0.25
        for i, v in zip(indices, values, strict=True)
    ]
    np.testing.assert_allclose(latent_rewards(m, edited, 0.25), manual, rtol=1e-12)


def test_example_record(built):
    store, _, roles, weights, indices, values = built
    ex = store.example(5)
    assert ex.role == roles[5] and ex.conversation()[-1] == {
        "role": "assistant",
        "content": ex.response,
    }
    contributions = values[5].astype(np.float64) * weights[indices[5]]
    assert ex.features["contribution"].abs().is_monotonic_decreasing
    assert ex.features["contribution"].sum() + 0.25 == pytest.approx(ex.reward, rel=1e-6)
    assert sorted(ex.features["feature_id"]) == sorted(indices[5].tolist())
    np.testing.assert_allclose(
        sorted(ex.features["contribution"]), sorted(contributions), rtol=1e-6
    )
    with pytest.raises(LookupError, match="example 9999"):
        store.example(9999)


def test_refresh_with_other_settings(built):
    store, *_ = built
    store.refresh_stats(top_n=2, bands=2, per_band=1, hist_bins=5)
    try:
        assert store.meta()["stats_top_n"] == "2"
        assert len(store.feature_histogram(0)) == 5
        got = store.quantile_examples(0)
        assert set(got["band"]) <= {1, 2} and got.groupby("band").size().max() == 1
    finally:
        store.refresh_stats(top_n=TOP_N)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.features(order_by="weight; DROP TABLE labels"), "order_by must be one of"),
        (lambda s: s.features(limit=-1), "limit must be >= 0"),
        (lambda s: s.features(min_frequency=float("nan")), "min_frequency must be finite"),
        (lambda s: s.top_examples(D_SAE), "feature_id must be <"),
        (lambda s: s.top_examples(-1), "feature_id must be >= 0"),
        (lambda s: s.top_examples(1, limit=0), "limit must be >= 1"),
        (lambda s: s.top_examples("3"), "feature_id must be an integer"),
        (lambda s: s.refresh_stats(top_n=0), "top_n must be >= 1"),
    ],
)
def test_bad_query_input(built, call, match):
    store, *_ = built
    with pytest.raises(ValueError, match=match):
        call(store)
