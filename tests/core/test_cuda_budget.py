"""The CUDA token budget: the largest padded-token batch that fits in free memory."""

from __future__ import annotations

import pytest
import torch

from sarm.model import (
    CPU_MAX_BATCH_TOKENS,
    CUDA_BATCH_TOKENS_CAP,
    ForwardShape,
    cuda_max_batch_tokens,
    default_max_batch_tokens,
)

GIB = 1024**3
# Llama-3.1-8B cut at layer 16 (the released SARM's backbone) in bf16
LLAMA_BF16 = ForwardShape(d_model=4096, intermediate=14336, dtype_bytes=2)


def test_bytes_per_token_by_hand():
    # bf16: 2 x (6 x 4096 + 3 x 14336) = 135,168; float32 standardisation: 4 x 3 x 4096 = 49,152
    assert LLAMA_BF16.bytes_per_token() == 135_168 + 49_152
    fp32 = ForwardShape(4096, 14336, 4)
    assert fp32.bytes_per_token() == 2 * 135_168 + 49_152


def test_budget_is_the_largest_that_fits():
    # 16 GiB free: 0.8 x 17,179,869,184 / 184,320 = 74,565.4 -> 74,565 tokens
    assert cuda_max_batch_tokens(16 * GIB, LLAMA_BF16) == 74_565
    # it fits: 74,565 tokens use no more than the 80% of free memory, one more would not
    per = LLAMA_BF16.bytes_per_token()
    assert 74_565 * per <= 0.8 * 16 * GIB < 74_566 * per
    # float32: 2 x 135,168 + 49,152 = 319,488 bytes a token -> 13,743,895,347 // 319,488 = 43,018
    fp32 = cuda_max_batch_tokens(16 * GIB, ForwardShape(4096, 14336, 4))
    assert fp32 == int(0.8 * 16 * GIB) // (2 * 135_168 + 49_152) == 43_018


def test_budget_is_capped_and_never_zero():
    assert cuda_max_batch_tokens(128 * GIB, LLAMA_BF16) == CUDA_BATCH_TOKENS_CAP
    assert cuda_max_batch_tokens(1000, LLAMA_BF16) == 1  # nothing fits: one row per batch


def test_shape_read_from_the_backbone(tmp_path):
    from helpers import make_tiny_sarm

    sarm = make_tiny_sarm(tmp_path)  # tiny Llama, d_model 64, float32, on the CPU
    shape = ForwardShape.of(sarm.backbone)
    config = sarm.backbone.model.config
    assert shape == ForwardShape(config.hidden_size, config.intermediate_size, 4)
    assert sarm.max_batch_tokens == CPU_MAX_BATCH_TOKENS == default_max_batch_tokens("cpu", shape)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_default_uses_free_memory(tmp_path):
    from helpers import make_tiny_sarm

    sarm = make_tiny_sarm(tmp_path)
    shape = ForwardShape(64, 256, 2)
    free, _ = torch.cuda.mem_get_info()
    assert default_max_batch_tokens("cuda", shape) == cuda_max_batch_tokens(free, shape)
    assert sarm.max_batch_tokens == CPU_MAX_BATCH_TOKENS
