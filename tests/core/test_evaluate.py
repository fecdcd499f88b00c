"""Evaluation metrics: vectorised code against plain-Python loops written here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sarm.evaluate import (
    NO_SUBSET,
    EvalReport,
    PairIndex,
    best_of_n_accuracy,
    evaluate,
    evaluate_arrays,
    flipped_pairs,
    pair_correct,
    pairwise_accuracy,
    per_subset_accuracy,
    rmbench_accuracy,
    rmbench_matrix,
)
from sarm.types import PreferenceGroup


def user(text: str):
    return ({"role": "user", "content": text},)


def random_groups(rng: np.random.Generator, n: int = 120) -> list[PreferenceGroup]:
    """A mix of every kind, with and without subsets."""
    groups = []
    for k in range(n):
        kind = ["pair", "pair", "best_of_n", "rmbench", "single"][k % 5]
        n_c, n_r = {
            "pair": (1 + k % 2, 1 + k % 3),
            "best_of_n": (1, 3 + k % 3),
            "rmbench": (3, 3),
            "single": (1, 0),
        }[kind]
        subset = [None, "alpha", "beta", "gamma"][int(rng.integers(4))]
        groups.append(
            PreferenceGroup(
                f"g{k}",
                user(f"prompt {k}"),
                tuple(f"c{i}" for i in range(n_c)),
                tuple(f"r{j}" for j in range(n_r)),
                subset,
                kind,
            )
        )
    return groups


def random_rewards(rng, groups, ties: bool = True) -> dict[tuple[str, str, int], float]:
    """Rewards on a coarse grid, so ties are common."""
    values = {}
    for g in groups:
        for role, i, _ in g.responses():
            values[(g.group_id, role, i)] = (
                float(rng.integers(0, 4)) if ties else float(rng.normal())
            )
    return values


# ----------------------------------------------------- plain-loop references


def ref_pairs(groups, rewards):
    """[(subset, kind, group_id, i, j, r_chosen, r_rejected)] by nested loops."""
    out = []
    for g in groups:
        if g.kind == "single":
            continue
        for i in range(len(g.chosen)):
            for j in range(len(g.rejected)):
                rc, rr = rewards[(g.group_id, "chosen", i)], rewards[(g.group_id, "rejected", j)]
                out.append((g.subset or NO_SUBSET, g.kind, g.group_id, i, j, rc, rr))
    return out


def ref_accuracy(pairs):
    return sum(1 for p in pairs if p[5] > p[6]) / len(pairs)


def ref_per_subset(pairs):
    table = {}
    for p in pairs:
        hits, n = table.get(p[0], (0, 0))
        table[p[0]] = (hits + (p[5] > p[6]), n + 1)
    return {k: (h / n, n) for k, (h, n) in table.items()}


def ref_best_of_n(groups, rewards, kind="best_of_n"):
    results = []
    for g in groups:
        if g.kind != kind:
            continue
        chosen = [rewards[(g.group_id, "chosen", i)] for i in range(len(g.chosen))]
        rejected = [rewards[(g.group_id, "rejected", j)] for j in range(len(g.rejected))]
        results.append(all(c > r for c in chosen for r in rejected))
    return sum(results) / len(results)


def ref_rmbench(groups, rewards):
    cells = [[0.0] * 3 for _ in range(3)]
    prompts = [g for g in groups if g.kind == "rmbench"]
    for g in prompts:
        for i in range(3):
            for j in range(3):
                win = rewards[(g.group_id, "chosen", i)] > rewards[(g.group_id, "rejected", j)]
                cells[i][j] += win / len(prompts)
    hard = (cells[0][1] + cells[0][2] + cells[1][2]) / 3
    easy = (cells[1][0] + cells[2][0] + cells[2][1]) / 3
    normal = (cells[0][0] + cells[1][1] + cells[2][2]) / 3
    total = sum(sum(row) for row in cells) / 9
    return cells, {"easy": easy, "normal": normal, "hard": hard, "total": total}


def index_and_vector(groups, rewards):
    keys = list(rewards)
    vector = np.array([rewards[k] for k in keys])
    return PairIndex.from_groups(groups, {k: r for r, k in enumerate(keys)}), vector


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_plain_loops(seed):
    rng = np.random.default_rng(seed)
    groups = random_groups(rng)
    rewards = random_rewards(rng, groups)
    pairs = ref_pairs(groups, rewards)
    index, vector = index_and_vector(groups, rewards)

    assert index.n_pairs == len(pairs)
    assert pairwise_accuracy(vector, index) == pytest.approx(ref_accuracy(pairs), abs=1e-12)
    subsets = ref_per_subset(pairs)
    assert per_subset_accuracy(vector, index) == pytest.approx(
        {k: v[0] for k, v in subsets.items()}
    )
    assert best_of_n_accuracy(vector, index) == pytest.approx(ref_best_of_n(groups, rewards))
    assert best_of_n_accuracy(vector, index, kind="rmbench") == pytest.approx(
        ref_best_of_n(groups, rewards, "rmbench")
    )
    cells, summary = ref_rmbench(groups, rewards)
    np.testing.assert_allclose(rmbench_matrix(vector, index), cells, atol=1e-12)
    assert rmbench_accuracy(vector, index) == pytest.approx(summary)

    report = evaluate(groups, rewards).to_dict()
    assert report["pairwise_accuracy"] == pytest.approx(ref_accuracy(pairs))
    assert report["n_pairs"] == len(pairs) and report["n_groups"] == len(groups)
    assert report["per_subset"] == {
        k: {"accuracy": pytest.approx(a), "n_pairs": n} for k, (a, n) in subsets.items()
    }
    assert report["mean_margin"] == pytest.approx(sum(p[5] - p[6] for p in pairs) / len(pairs))
    assert report["rmbench"] == pytest.approx(summary)
    json.dumps(report)


def test_index_columns_match_groups():
    rng = np.random.default_rng(7)
    groups = random_groups(rng, 40)
    rewards = random_rewards(rng, groups, ties=False)
    keys = list(rewards)
    row = {k: r for r, k in enumerate(keys)}
    index = PairIndex.from_groups(groups, row)
    by_callable = PairIndex.from_groups(groups, lambda g, role, i: row[(g, role, i)])
    for name in ("chosen_row", "rejected_row", "group", "subset", "kind", "difficulty"):
        np.testing.assert_array_equal(getattr(index, name), getattr(by_callable, name))
    pairs = ref_pairs(groups, rewards)
    for p, (c, r, grp, sub, i, j, d) in zip(
        pairs,
        zip(
            index.chosen_row,
            index.rejected_row,
            index.group,
            index.subset,
            index.chosen_index,
            index.rejected_index,
            index.difficulty,
            strict=True,
        ),
        strict=True,
    ):
        assert keys[c] == (p[2], "chosen", p[3]) and keys[r] == (p[2], "rejected", p[4])
        assert index.group_ids[grp] == p[2] and index.subset_names[sub] == p[0]
        want = -1 if p[1] != "rmbench" else (0 if i > j else 1 if i == j else 2)
        assert d == want


def test_rmbench_hand_built_example():
    """Two prompts; rewards chosen by hand so every cell is known.

    Prompt A: chosen [1, 2, 3] vs rejected [0.5, 1.5, 2.5] (styles concise, detailed,
    markdown): chosen i beats rejected j exactly when i >= j -> lower triangle and
    diagonal right, upper triangle (hard) wrong. Prompt B: every reward 1.0, so all
    nine comparisons are ties and count as wrong.
    """
    a = PreferenceGroup("A", user("a"), ("ca", "da", "ma"), ("cr", "dr", "mr"), "chat", "rmbench")
    b = PreferenceGroup("B", user("b"), ("ca", "da", "ma"), ("cr", "dr", "mr"), "chat", "rmbench")
    rewards = {("A", "chosen", i): v for i, v in enumerate([1.0, 2.0, 3.0])}
    rewards |= {("A", "rejected", j): v for j, v in enumerate([0.5, 1.5, 2.5])}
    rewards |= {("B", role, k): 1.0 for role in ("chosen", "rejected") for k in range(3)}
    index, vector = index_and_vector([a, b], rewards)
    expected = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]]) / 2
    np.testing.assert_allclose(rmbench_matrix(vector, index), expected)
    summary = rmbench_accuracy(vector, index)
    assert summary == pytest.approx({"easy": 0.5, "normal": 0.5, "hard": 0.0, "total": 1 / 3})
    report = evaluate([a, b], rewards)
    assert report.rmbench == pytest.approx(summary)
    assert report.pairwise_accuracy == pytest.approx(6 / 18)
    assert report.best_of_n_accuracy is None


def test_ties_count_as_wrong():
    groups = [
        PreferenceGroup("p", user("p"), ("c",), ("r",)),
        PreferenceGroup("b", user("b"), ("c",), ("r0", "r1", "r2"), kind="best_of_n"),
    ]
    rewards = {("p", "chosen", 0): 1.0, ("p", "rejected", 0): 1.0}
    rewards |= {("b", "chosen", 0): 2.0, ("b", "rejected", 0): 0.0}
    rewards |= {("b", "rejected", 1): 2.0, ("b", "rejected", 2): 1.0}
    report = evaluate(groups, rewards)
    assert report.pairwise_accuracy == pytest.approx(2 / 4)
    assert report.best_of_n_accuracy == 0.0
    assert report.rmbench is None


def test_best_of_n_on_pairs_equals_pairwise():
    rng = np.random.default_rng(3)
    groups = [PreferenceGroup(f"g{k}", user(str(k)), ("c",), ("r",), "s") for k in range(200)]
    index, vector = index_and_vector(groups, random_rewards(rng, groups))
    assert best_of_n_accuracy(vector, index, kind="pair") == pairwise_accuracy(vector, index)
    assert best_of_n_accuracy(vector, index, kind=None) == pairwise_accuracy(vector, index)
    assert math.isnan(best_of_n_accuracy(vector, index))  # no best_of_n groups here


def test_flipped_pairs_match_a_loop():
    rng = np.random.default_rng(11)
    groups = random_groups(rng, 60)
    before = random_rewards(rng, groups)
    after = {k: v + float(rng.integers(-1, 2)) for k, v in before.items()}
    index, v_before = index_and_vector(groups, before)
    v_after = np.array([after[k] for k in before])
    pairs_before, pairs_after = ref_pairs(groups, before), ref_pairs(groups, after)
    want = [
        n
        for n, (p, q) in enumerate(zip(pairs_before, pairs_after, strict=True))
        if (p[5] > p[6]) != (q[5] > q[6])
    ]
    assert flipped_pairs(v_before, v_after, index).tolist() == want
    assert len(want) > 0


def test_report_shape_and_empty_cases():
    single = PreferenceGroup("s", user("q"), ("a",), kind="single", label=1.0)
    report = evaluate([single], {})
    assert report.to_dict() == {
        "pairwise_accuracy": None,
        "n_pairs": 0,
        "per_subset": {},
        "best_of_n_accuracy": None,
        "n_groups": 1,
        "rmbench": None,
        "mean_margin": None,
    }
    with pytest.raises(ValueError, match="pairwise_accuracy must be None exactly"):
        EvalReport(None, 3, {}, None, 1, None, None)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        EvalReport(1.5, 3, {}, None, 1, None, 0.0)


def test_bad_inputs_raise_clear_errors():
    groups = [PreferenceGroup("g", user("p"), ("c",), ("r",))]
    with pytest.raises(ValueError, match=r"no reward for group 'g' rejected response 0"):
        evaluate(groups, {("g", "chosen", 0): 1.0})
    with pytest.raises(ValueError, match="non-finite reward"):
        evaluate(groups, {("g", "chosen", 0): 1.0, ("g", "rejected", 0): math.nan})
    with pytest.raises(ValueError, match="duplicate group_id 'g'"):
        PairIndex.from_groups(groups * 2, {("g", "chosen", 0): 0, ("g", "rejected", 0): 1})
    with pytest.raises(ValueError, match=r"no reward row for response \('g', 'rejected', 0\)"):
        PairIndex.from_groups(groups, {("g", "chosen", 0): 0})
    index = PairIndex.from_arrays([0, 2], [1, 3])
    with pytest.raises(ValueError, match="rewards has 3 entries but the index uses row 3"):
        pairwise_accuracy(np.zeros(3), index)
    with pytest.raises(ValueError, match="1-D integer array"):
        PairIndex.from_arrays([0.0, 1.0], [1, 2])
    with pytest.raises(ValueError, match="has 1 entries, expected 2"):
        PairIndex.from_arrays([0, 1], [1])
    with pytest.raises(ValueError, match=r"chosen_row values must be in >= 0"):
        PairIndex.from_arrays([-1, 1], [1, 2])
    with pytest.raises(ValueError, match="rmbench pairs need"):
        PairIndex.from_arrays([0], [1], kind="rmbench", chosen_index=[3])


def test_from_arrays_defaults_and_read_only():
    index = PairIndex.from_arrays(np.array([0, 2, 4]), np.array([1, 3, 5]))
    assert index.subset_names == (NO_SUBSET,) and index.group_ids == ("0", "1", "2")
    assert index.difficulty.tolist() == [-1, -1, -1]
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])
    assert pair_correct(rewards, index).tolist() == [True, False, False]
    with pytest.raises(ValueError):
        index.chosen_row[0] = 5


def test_evaluate_arrays_on_100k_pairs():
    """The dashboard's recompute path: 100,000 pairs, checked against a loop on a sample."""
    rng = np.random.default_rng(5)
    n = 100_000
    index = PairIndex.from_arrays(
        np.arange(n) * 2,
        np.arange(n) * 2 + 1,
        subset=rng.integers(0, 8, n),
        subset_names=[f"s{k}" for k in range(8)],
    )
    rewards = rng.normal(size=2 * n)
    report = evaluate_arrays(rewards, index)
    want = sum(rewards[2 * k] > rewards[2 * k + 1] for k in range(n)) / n
    assert report.pairwise_accuracy == pytest.approx(want)
    assert sum(v["n_pairs"] for v in report.per_subset.values()) == n


def test_macro_accuracy_weighs_each_label_once():
    from sarm.evaluate import PairIndex, accuracy_per_label, macro_accuracy

    # 4 groups: three labelled "big" (2 right, 1 wrong), one "small" (wrong)
    index = PairIndex.from_arrays([0, 2, 4, 6], [1, 3, 5, 7], group=[0, 1, 2, 3])
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    labels = ["big", "big", "big", "small"]
    table = accuracy_per_label(rewards, index, labels)
    assert table == {"big": (pytest.approx(2 / 3), 3), "small": (0.0, 1)}
    assert macro_accuracy(rewards, index, labels) == pytest.approx((2 / 3 + 0.0) / 2)


def test_correct_is_strict_at_the_edges_of_float_range():
    """``pair_correct`` reads margins; a margin's sign must equal ``chosen > rejected``."""
    index = PairIndex.from_arrays([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])
    tiny = np.finfo(np.float64).tiny  # subnormal differences are not rounded to 0
    big = np.finfo(np.float64).max  # max - (-max) overflows to +inf, still right
    values = [tiny, 0.0, 5e-324, 0.0, 1.0, 1.0, big, -big, -big, big]
    rewards = np.array(values)
    want = rewards[0::2] > rewards[1::2]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(pair_correct(rewards, index), want)
        float32 = rewards.astype(np.float32)  # overflows to +-inf in float32
    with pytest.raises(ValueError, match="non-finite"):
        pair_correct(float32, index)
    np.testing.assert_array_equal(
        pair_correct(np.array([2**62, -(2**62), 0, 0, 3, 1, 1, 3, 5, 5]), index),
        [True, False, True, False, False],  # integers: no wrap-around in the difference
    )
    with pytest.raises(ValueError, match="real numbers"):
        pair_correct(rewards.astype(complex), index)
