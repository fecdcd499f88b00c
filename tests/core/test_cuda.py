"""The CUDA / bf16 path (skipped without a GPU; run on a GPU machine when one is lent)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_released_checkpoint

from sarm import load_sarm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

PAIRS = [
    ("What is 2+2?", "It is 4."),
    ("Tell me about dragons.", "Dragons are mythical creatures that appear in many cultures."),
    ("hi", "hello"),
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_released_checkpoint(tmp_path_factory.mktemp("cuda") / "m", seed=5, d_model=128)


def test_cuda_float32_matches_cpu(ckpt):
    cpu, gpu = load_sarm(ckpt), load_sarm(ckpt, device="cuda")
    assert next(gpu.backbone.model.parameters()).is_cuda
    for a, b in zip(cpu.score_batch(PAIRS), gpu.score_batch(PAIRS), strict=True):
        assert abs(a.reward - b.reward) < 1e-3
        assert abs(sum(b.contributions.values()) + b.bias - b.reward) < 1e-9


def test_cuda_bf16_runs_and_stays_close(ckpt):
    ref = load_sarm(ckpt, device="cuda")
    bf16 = load_sarm(ckpt, device="cuda", dtype=torch.bfloat16)
    assert bf16.backbone.dtype == torch.bfloat16
    singles = [bf16.score(p, r) for p, r in PAIRS]
    batch = bf16.score_batch(PAIRS)
    for s, b, r in zip(singles, batch, ref.score_batch(PAIRS), strict=True):
        assert abs(sum(b.contributions.values()) + b.bias - b.reward) < 1e-9
        assert abs(s.reward - b.reward) < 0.05 * (1 + abs(s.reward))
        assert abs(b.reward - r.reward) < 0.1 * (1 + abs(r.reward))
    lat = bf16.token_latents(PAIRS[1])
    assert abs(lat.reward_trajectory[-1] - batch[1].reward) < 1e-3
