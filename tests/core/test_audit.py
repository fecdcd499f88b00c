"""sarm.audit: pair indices from stored frames, misrankings, error attribution, edit previews."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sarm.audit import (
    error_feature_margins,
    misranked_pairs,
    pair_table,
    preview_edit,
    reward_frame,
    subset_accuracy,
)
from sarm.evaluate import PairIndex
from sarm.head import Head
from sarm.head import rewards as latent_rewards
from sarm.latents import SparseLatents
from sarm.types import PreferenceGroup

D_SAE = 12


def groups() -> list[PreferenceGroup]:
    p = ({"role": "user", "content": "q"},)
    out = [
        PreferenceGroup(f"p{i}", p, (f"c{i}",), (f"r{i}",), subset=["a", "b", None][i % 3])
        for i in range(9)
    ]
    out.insert(3, PreferenceGroup("one", p, ("x",), kind="single", subset="solo"))
    out.append(PreferenceGroup("bon", p, ("c",), ("r1", "r2", "r3"), subset="a", kind="best_of_n"))
    out.append(
        PreferenceGroup(
            "rm", p, ("c0", "c1", "c2"), ("r0", "r1", "r2"), kind="rmbench", subset="rm"
        )
    )
    return out


def frame_of(gs: list[PreferenceGroup]) -> pd.DataFrame:
    rows = []
    for gi, g in enumerate(gs):
        for role, i, _ in g.responses():
            rows.append((len(rows), gi, g.group_id, role, i, g.kind, g.subset))
    cols = ["example_id", "group_index", "group_id", "role", "response_index", "kind", "subset"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture
def data():
    gs = groups()
    frame = frame_of(gs)
    rng = np.random.default_rng(1)
    n = len(frame)
    ids = [np.sort(rng.choice(D_SAE, 4, replace=False)) for _ in range(n)]
    vals = [rng.normal(size=4).astype(np.float32) for _ in range(n)]
    latents = SparseLatents.from_rows(ids, vals, D_SAE)
    weight = rng.normal(size=D_SAE).astype(np.float32)  # a stored head is float32
    return gs, frame, latents, weight


def test_pair_index_from_frame_equals_from_groups(data):
    gs, frame, _, _ = data
    rows = {
        (g, r, i): k
        for k, (g, r, i) in enumerate(
            zip(frame.group_id, frame.role, frame.response_index, strict=True)
        )
    }
    ref = PairIndex.from_groups(gs, rows)
    got = PairIndex.from_frame(frame)
    for name in (
        "chosen_row",
        "rejected_row",
        "group",
        "subset",
        "kind",
        "chosen_index",
        "rejected_index",
        "difficulty",
    ):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    assert got.subset_names == ref.subset_names and got.group_ids == ref.group_ids
    shuffled = frame.sample(frac=1.0, random_state=0)  # rows are positions, whatever the order
    again = PairIndex.from_frame(shuffled)
    back = shuffled["example_id"].to_numpy()
    assert sorted(zip(back[again.chosen_row], back[again.rejected_row], strict=True)) == sorted(
        zip(ref.chosen_row, ref.rejected_row, strict=True)
    )


def test_pair_index_from_frame_rejects_bad_frames(data):
    _, frame, _, _ = data
    with pytest.raises(ValueError, match="lacks columns"):
        PairIndex.from_frame(frame.drop(columns=["role"]))
    with pytest.raises(ValueError, match="unknown kinds"):
        PairIndex.from_frame(frame.assign(kind="triple"))


def brute_pairs(gs, frame, rewards):
    """(group_id, chosen example, rejected example, margin) by looping over the groups."""
    out = []
    for g in gs:
        if g.kind == "single":
            continue
        part = frame[frame.group_id == g.group_id]
        for _, c in part[part.role == "chosen"].iterrows():
            for _, r in part[part.role == "rejected"].iterrows():
                out.append(
                    (
                        g.group_id,
                        c.example_id,
                        r.example_id,
                        rewards[c.example_id] - rewards[r.example_id],
                    )
                )
    return out


def test_pair_table_and_misranked(data):
    gs, frame, latents, weight = data
    rewards = latent_rewards(latents, weight, 0.5)
    index = PairIndex.from_frame(frame)
    table = pair_table(rewards, index, frame)
    ref = brute_pairs(gs, frame, rewards)
    assert list(zip(table.group_id, table.chosen_id, table.rejected_id, strict=True)) == [
        r[:3] for r in ref
    ]
    np.testing.assert_allclose(table["margin"], [r[3] for r in ref])
    assert (table["correct"] == (table["margin"] > 0)).all()
    wrong = misranked_pairs(rewards, index, frame)
    expected = sorted((r for r in ref if r[3] <= 0), key=lambda r: r[3])
    assert len(wrong) == len(expected) > 0
    assert list(zip(wrong.chosen_id, wrong.rejected_id, strict=True)) == [r[1:3] for r in expected]
    assert len(misranked_pairs(rewards, index, frame, limit=2)) == 2


def test_error_feature_margins_against_dense_reference(data):
    gs, frame, latents, weight = data
    index = PairIndex.from_frame(frame)
    rewards = latent_rewards(latents, weight, -0.3)
    dense = latents.dense().astype(np.float64)
    ref = np.zeros(D_SAE)
    involved = np.zeros(D_SAE)
    n_wrong = 0
    for _, c, r, margin in brute_pairs(gs, frame, rewards):
        if margin <= 0:
            n_wrong += 1
            ref += weight * (dense[c] - dense[r])
            involved += (dense[c] != 0).astype(float) + (dense[r] != 0)
    table = error_feature_margins(latents, Head(weight, -0.3), index)
    got = dict(zip(table.feature_id, table.margin_sum, strict=True))
    for f in range(D_SAE):
        assert got.get(f, 0.0) == pytest.approx(ref[f], abs=1e-9)
    total = sum(r[3] for r in brute_pairs(gs, frame, rewards) if r[3] <= 0)
    assert table["margin_sum"].sum() == pytest.approx(total)
    assert table.attrs["n_errors"] == n_wrong and table.attrs["total_margin"] == pytest.approx(
        total
    )
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["margin_sum"].is_monotonic_increasing
    assert (table["mean_per_error"] * n_wrong).to_numpy() == pytest.approx(
        table["margin_sum"].to_numpy()
    )
    for f, n in zip(table.feature_id, table.n_responses, strict=True):
        assert n <= involved[f]


def test_reward_frame_and_subset_accuracy(data):
    gs, frame, latents, weight = data
    index = PairIndex.from_frame(frame)
    before = latent_rewards(latents, weight)
    after = before + np.linspace(-1, 1, len(before))
    rf = reward_frame(frame, before)
    assert rf["subset"].tolist()[:6] == ["a", "a", "b", "b", "(none)", "(none)"]
    assert rf["reward"].tolist() == before.tolist()
    with pytest.raises(ValueError, match="rewards for"):
        reward_frame(frame, before[:-1])
    table = subset_accuracy(before, after, index).set_index("subset")
    subset_of = {g.group_id: g.subset or "(none)" for g in gs}
    for rewards, col in ((before, "accuracy_before"), (after, "accuracy_after")):
        for name in ("a", "b", "(none)", "rm"):
            hits = [r[3] > 0 for r in brute_pairs(gs, frame, rewards) if subset_of[r[0]] == name]
            assert table.loc[name, col] == pytest.approx(np.mean(hits))
    assert (table["change"] == table["accuracy_after"] - table["accuracy_before"]).all()
    assert table.loc["a", "n_pairs"] == 3 + 3  # p0, p3, p6 and the best-of-N group's three pairs
    assert "solo" not in table.index


def test_preview_edit_flips_against_full_recompute(data):
    gs, frame, latents, weight = data
    index = PairIndex.from_frame(frame)
    overrides = {2: 3.0, 5: -4.0, 7: float(weight[7])}
    preview = preview_edit(Head(weight, 0.1).edit(overrides), latents, index)
    w2 = weight.copy()
    w2[2], w2[5] = 3.0, -4.0
    np.testing.assert_allclose(preview.rewards_after, latent_rewards(latents, w2, 0.1), atol=1e-12)
    np.testing.assert_allclose(
        preview.rewards_before, latent_rewards(latents, weight, 0.1), atol=1e-12
    )
    before = brute_pairs(gs, frame, preview.rewards_before)
    after = brute_pairs(gs, frame, preview.rewards_after)
    flips = [
        k for k, (b, a) in enumerate(zip(before, after, strict=True)) if (b[3] > 0) != (a[3] > 0)
    ]
    assert preview.flipped.tolist() == flips and flips
    assert preview.after.pairwise_accuracy == pytest.approx(np.mean([a[3] > 0 for a in after]))
    table = preview.flipped_table(index, frame)
    assert table["pair"].tolist() == flips
    assert table["change"].tolist() == ["fixed" if after[k][3] > 0 else "broken" for k in flips]
    np.testing.assert_allclose(table["margin_before"], [before[k][3] for k in flips])
    np.testing.assert_allclose(table["margin_after"], [after[k][3] for k in flips])
    subsets = preview.per_subset().set_index("subset")
    assert (subsets["change"] == subsets["accuracy_after"] - subsets["accuracy_before"]).all()


def test_a_store_without_pairs():
    p = ({"role": "user", "content": "q"},)
    gs = [PreferenceGroup(f"s{i}", p, (f"x{i}",), kind="single", label=1.0) for i in range(3)]
    frame = frame_of(gs)
    index = PairIndex.from_frame(frame)
    assert index.n_pairs == 0 and index.group_ids == ("s0", "s1", "s2")
    latents = SparseLatents.from_rows([np.array([1])] * 3, [np.array([0.5], np.float32)] * 3, D_SAE)
    rewards = latent_rewards(latents, np.ones(D_SAE))
    assert misranked_pairs(rewards, index, frame).empty
    assert error_feature_margins(latents, Head(np.ones(D_SAE)), index).empty
    preview = preview_edit(Head(np.ones(D_SAE)).edit({1: 2.0}), latents, index)
    assert preview.after.pairwise_accuracy is None and preview.per_subset().empty
    assert preview.flipped_table(index, frame).empty
