"""Interventions: edit and steering maths against dense numpy, order semantics, previews."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sarm.head import rewards as latent_rewards
from sarm.interventions import (
    Intervention,
    edit_weights,
    fold_into_head,
    parse_actions,
    preview_score,
    shifted_rewards,
    steer_latents,
    touched_features,
)
from sarm.latents import SparseLatents
from sarm.model import Score

D = 12


def random_latents(n: int = 40, d: int = D, k: int = 4, seed: int = 0) -> SparseLatents:
    """k distinct active features per row, values bounded away from 0 (some negative)."""
    rng = np.random.default_rng(seed)
    idx = [np.sort(rng.choice(d, size=k, replace=False)) for _ in range(n)]
    vals = [
        rng.uniform(0.2, 2.0, size=k) * rng.choice([1.0, -1.0], size=k, p=[0.8, 0.2])
        for _ in range(n)
    ]
    return SparseLatents.from_rows(idx, vals, d)


def dense_rewards(z: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return z.astype(np.float64) @ w + b


@pytest.fixture()
def latents() -> SparseLatents:
    return random_latents()


@pytest.fixture()
def weight() -> np.ndarray:
    return np.random.default_rng(1).normal(size=D)


# ----------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("scale:0.0", Intervention("scale", (1, 2), 0.0)),
        ("set:1.5", Intervention("set", (1, 2), 1.5)),
        ("add:-0.2", Intervention("add", (1, 2), -0.2)),
        ("zero", Intervention("zero", (1, 2))),
        ("act_add:2", Intervention("act_add", (1, 2), 2.0)),
        ("act_mul:0.5@7,3", Intervention("act_mul", (7, 3), 0.5)),
    ],
)
def test_parse(spec, expected):
    got = Intervention.parse(spec, features=[1, 2])
    assert got == expected
    assert Intervention.parse(got.spec()) == got
    assert Intervention.from_dict(got.to_dict()) == got


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("shrink:2", "unknown action 'shrink'"),
        ("scale", "needs a value"),
        ("zero:1", "zero takes no value"),
        ("scale:abc", "'abc' is not a number"),
        ("scale:inf", "must be finite"),
        ("scale:1@x", "'x' is not a feature id"),
        ("scale:1@3,3", "repeat"),
        ("scale:1@-1", "non-negative"),
        ("", "non-empty"),
    ],
)
def test_parse_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        Intervention.parse(spec, features=[1])


def test_parse_needs_features():
    with pytest.raises(ValueError, match="names no features"):
        Intervention.parse("scale:0")
    assert parse_actions(["zero", "add:1@4"], features=[2]) == [
        Intervention("zero", (2,)),
        Intervention("add", (4,), 1.0),
    ]


def test_out_of_range_feature(latents, weight):
    with pytest.raises(ValueError, match=r"feature ids \[12\] are out of range 0..11"):
        shifted_rewards(latents, weight, 0.0, [Intervention("zero", (12,))])


# -------------------------------------------------------------------- maths


@pytest.mark.parametrize(
    ("action", "value", "expected"),
    [
        ("set", 1.5, lambda w: np.full_like(w, 1.5)),
        ("scale", -2.0, lambda w: -2.0 * w),
        ("add", 0.25, lambda w: w + 0.25),
        ("zero", 0.0, lambda w: np.zeros_like(w)),
    ],
)
def test_weight_edits_vs_dense(latents, weight, action, value, expected):
    feats = (0, 5, 9)
    item = Intervention(action, feats, value)
    w_ref = weight.copy()
    w_ref[list(feats)] = expected(weight[list(feats)])
    assert np.array_equal(edit_weights(weight, [item]), w_ref)
    got = shifted_rewards(latents, weight, 0.3, [item])
    np.testing.assert_allclose(got, dense_rewards(latents.dense(), w_ref, 0.3), atol=1e-9)


@pytest.mark.parametrize(("action", "value"), [("act_add", 0.7), ("act_mul", -1.5)])
def test_steering_vs_dense(latents, weight, action, value):
    feats = [2, 7]
    z = latents.dense().astype(np.float64)
    active = z[:, feats] != 0
    block = z[:, feats]
    block[active] = block[active] + value if action == "act_add" else block[active] * value
    z[:, feats] = block
    item = Intervention(action, tuple(feats), value)
    steered = steer_latents(latents, [item])
    np.testing.assert_allclose(steered.dense(), z, atol=1e-6)
    assert np.array_equal(steered.indices, latents.indices)  # the support never changes
    got = shifted_rewards(latents, weight, -0.4, [item])
    np.testing.assert_allclose(got, dense_rewards(z, weight, -0.4), atol=1e-9)


def test_mixed_actions_vs_dense(latents, weight):
    items = parse_actions(["scale:0.5@1,2", "act_add:1.0@2,3", "set:-1@4", "act_mul:3@1,4"])
    w = weight.copy()
    w[[1, 2]] *= 0.5
    w[4] = -1.0
    z = latents.dense().astype(np.float64)
    for f, op in ((2, "add"), (3, "add"), (1, "mul"), (4, "mul")):
        on = z[:, f] != 0
        z[on, f] = z[on, f] + 1.0 if op == "add" else z[on, f] * 3.0
    expected = dense_rewards(z, w, 0.1)
    np.testing.assert_allclose(shifted_rewards(latents, weight, 0.1, items), expected, atol=1e-9)
    via_copies = latent_rewards(steer_latents(latents, items), edit_weights(weight, items), 0.1)
    np.testing.assert_allclose(via_copies, expected, atol=1e-5)


def test_only_touched_rows_change(latents, weight):
    base = latent_rewards(latents, weight, 0.2)
    kept = base.copy()
    got = shifted_rewards(latents, weight, 0.2, [Intervention("scale", (6,), 4.0)], base)
    assert np.array_equal(base, kept)  # not modified in place
    untouched = ~(latents.dense()[:, 6] != 0)
    assert untouched.any() and np.array_equal(got[untouched], base[untouched])
    assert not np.allclose(got[~untouched], base[~untouched])


def test_touched_features():
    items = parse_actions(["zero@5,1", "act_mul:2@1,9"])
    assert touched_features(items).tolist() == [1, 5, 9]


# --------------------------------------------------------------- ordering


def rewards_of(latents, weight, specs):
    return shifted_rewards(latents, weight, 0.0, parse_actions(specs))


@pytest.mark.parametrize(
    "specs",
    [
        ["scale:2@3", "act_add:1@3"],  # weight edit vs steering, same feature
        ["set:1@3", "act_mul:-2@3"],
        ["set:1@3", "scale:3@4", "act_add:2@5", "zero@6"],  # disjoint features
        ["scale:2@3", "scale:-0.5@3", "scale:3@3"],
        ["add:1@3", "add:-0.25@3,4"],
        ["act_mul:2@3", "act_mul:0.5@3,5"],
        ["act_add:1@3", "act_add:-3@3"],
        ["add:1@3", "act_mul:3@3"],
    ],
)
def test_commuting_actions(latents, weight, specs):
    reference = rewards_of(latents, weight, specs)
    for order in itertools.permutations(specs):
        np.testing.assert_allclose(rewards_of(latents, weight, list(order)), reference, atol=1e-9)


def test_weight_edits_commute_with_steering_in_any_interleaving(latents, weight):
    edits = ["scale:2@3", "add:1@3"]
    steer = ["act_mul:0.5@3", "act_add:2@3"]
    reference = rewards_of(latents, weight, edits + steer)
    for mask in itertools.combinations(range(4), 2):  # every interleaving keeping each order
        e, s = iter(edits), iter(steer)
        order = [next(e) if i in mask else next(s) for i in range(4)]
        np.testing.assert_allclose(rewards_of(latents, weight, order), reference, atol=1e-9)


def test_same_feature_order_semantics(weight):
    w3 = weight[3]
    one = lambda specs: edit_weights(weight, parse_actions(specs))[3]  # noqa: E731
    assert one(["scale:2@3", "add:1@3"]) == pytest.approx(2 * w3 + 1)
    assert one(["add:1@3", "scale:2@3"]) == pytest.approx(2 * w3 + 2)
    assert one(["add:5@3", "set:1@3"]) == 1.0  # set discards what came before
    assert one(["set:1@3", "add:5@3"]) == 6.0
    assert one(["scale:9@3", "zero@3"]) == 0.0


def test_steering_keeps_support():
    latents = SparseLatents.from_rows(
        [np.array([0]), np.array([1])], [np.array([2.0]), np.array([3.0])], 2
    )
    w = np.array([1.0, 1.0])
    first_mul = rewards_of(latents, w, ["act_mul:0@0", "act_add:2@0"])
    first_add = rewards_of(latents, w, ["act_add:2@0", "act_mul:0@0"])
    assert first_mul.tolist() == [2.0, 3.0]  # a latent multiplied to 0 is still "active"
    assert first_add.tolist() == [0.0, 3.0]


# ------------------------------------------------------------ head, preview


def test_fold_into_head_equals_steering(latents, weight):
    items = parse_actions(["act_mul:0.5@2", "scale:3@2", "zero@4", "act_mul:-1@5"])
    folded = fold_into_head(weight, items)
    expected = weight.copy()
    expected[2] *= 1.5
    expected[4] = 0.0
    expected[5] *= -1
    np.testing.assert_allclose(folded, expected)
    np.testing.assert_allclose(
        latent_rewards(latents, folded, 0.5),
        shifted_rewards(latents, weight, 0.5, items),
        atol=1e-9,
    )
    with pytest.raises(ValueError, match="act_add"):
        fold_into_head(weight, parse_actions(["act_add:1@2"]))


def test_preview_score(latents, weight):
    row = 3
    ids, vals = latents.row(row)
    acts = {int(f): float(v) for f, v in zip(ids, vals, strict=True)}
    score = Score(
        reward=float(latent_rewards(latents, weight, 0.25)[row]),
        bias=0.25,
        contributions={f: weight[f] * a for f, a in acts.items()},
        activations=acts,
        tokens=["a"],
        token_ids=[1],
    )
    items = [
        Intervention("scale", (int(ids[0]),), -1.0),
        Intervention("act_add", (int(ids[1]),), 2.0),
    ]
    after = preview_score(score, weight, items)
    assert after.reward == pytest.approx(
        shifted_rewards(latents, weight, 0.25, items)[row], abs=1e-9
    )
    assert sum(after.contributions.values()) + after.bias == pytest.approx(after.reward, abs=1e-12)
    assert after.activations[int(ids[1])] == pytest.approx(float(vals[1]) + 2.0)
    assert after.tokens == score.tokens and score.activations == acts  # a copy; input unchanged
