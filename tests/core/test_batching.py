"""Token-budget batching: the plan itself, and batched scores equal to one-at-a-time scores."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import make_tiny_sarm

from sarm.model import (
    CPU_MAX_BATCH_TOKENS,
    CUDA_MAX_BATCH_TOKENS,
    default_max_batch_tokens,
    plan_batches,
)


def check_plan(lengths: list[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    plan = plan_batches(lengths, max_tokens, max_rows)
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert [lengths[i] for i in flat] == sorted(lengths)  # length-sorted
    for batch in plan:
        assert batch, "no empty batch"
        assert len(batch) <= max_rows
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= max_tokens or len(batch) == 1  # only a lone over-long row exceeds
    return plan


def test_plan_cuts_by_padded_tokens_not_rows():
    lengths = [10, 100, 10, 10, 100, 10]
    plan = check_plan(lengths, max_tokens=200, max_rows=64)
    assert plan == [[0, 2, 3, 5], [1, 4]]


def test_plan_respects_row_cap():
    assert check_plan([5] * 7, max_tokens=10_000, max_rows=3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_overlong_row_gets_its_own_batch():
    plan = check_plan([10, 500, 10], max_tokens=100, max_rows=8)
    assert plan == [[0, 2], [1]]


def test_ties_keep_input_order_and_empty_input_plans_nothing():
    assert check_plan([3, 3, 3], max_tokens=6, max_rows=8) == [[0, 1], [2]]
    assert plan_batches([], 100, 8) == []


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_respect_every_rule(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 60))]
    check_plan(lengths, max_tokens=rng.randint(1, 2000), max_rows=rng.randint(1, 16))


@pytest.mark.parametrize(("tokens", "rows"), [(0, 8), (100, 0)])
def test_plan_rejects_empty_budgets(tokens, rows):
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_batches([1, 2], tokens, rows)


def test_default_budget_depends_on_the_device():
    assert default_max_batch_tokens("cpu") == CPU_MAX_BATCH_TOKENS
    assert default_max_batch_tokens("cuda:0") == CUDA_MAX_BATCH_TOKENS


ITEMS = [
    ("hi", "hello"),
    ("Why is the sky blue?", "Rayleigh scattering of sunlight by air molecules. " * 6),
    ("What is 2+2?", "It is 4."),
    ("Tell me a story.", "Once upon a time a dragon learned to cook pasta. " * 3),
    ("Unicode?", "Yes: naïve café, 日本語, emoji 🙂."),
    ("ok", "fine"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("batching"))


@pytest.mark.parametrize(("budget", "rows"), [(1, 8), (64, 8), (10_000, 3), (10_000, 64)])
def test_batched_scores_equal_single_scores_in_input_order(tiny, budget, rows):
    single = [tiny.score(p, r) for p, r in ITEMS]
    batched = tiny.score_batch(ITEMS, batch_size=rows, max_batch_tokens=budget)
    assert [s.conversation[-1]["content"] for s in batched] == [r for _, r in ITEMS]
    for one, many in zip(single, batched, strict=True):
        assert many.token_ids == one.token_ids
        assert many.reward == pytest.approx(one.reward, abs=1e-4)
        assert many.contributions.keys() == one.contributions.keys()


def test_pooled_latents_follow_the_model_budget(tiny):
    convs = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": r}] for p, r in ITEMS
    ]
    single = tiny.pooled_latents(convs, batch_size=1)
    old = tiny.max_batch_tokens
    try:
        tiny.max_batch_tokens = 10_000
        batches = list(tiny._sorted_batches(convs, 64, progress=False))
        assert len(batches) == 1  # the model's budget applies when none is passed
        batched = tiny.pooled_latents(convs, batch_size=64, return_hidden=True)
    finally:
        tiny.max_batch_tokens = old
    np.testing.assert_allclose(batched.rewards, single.rewards, atol=1e-4)
    np.testing.assert_array_equal(batched.n_tokens, single.n_tokens)
    lengths = [len(tiny.backbone.encoder.token_ids(c)[0]) for c in convs]
    np.testing.assert_array_equal(batched.n_tokens, lengths)  # input order, not sorted order


def test_model_config_sets_the_budget_and_refuses_an_empty_one(tiny):
    from sarm.configs import ModelConfig

    with pytest.raises(ValueError, match="max_batch_tokens must be an integer >= 1"):
        ModelConfig(model="m", max_batch_tokens=0)
    old = tiny.max_batch_tokens
    try:
        assert ModelConfig(model="m").apply_batching(tiny).max_batch_tokens == old
        assert ModelConfig(model="m", max_batch_tokens=123).apply_batching(tiny) is tiny
        assert tiny.max_batch_tokens == 123
    finally:
        tiny.max_batch_tokens = old
