"""Loader behaviour: our layout round trip, remote code, bad input, truncation, pooling."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_released_checkpoint
from safetensors.torch import load_file, save_file

from sarm import Head, load_sarm, save_sarm
from sarm.saes import (
    load_sae,
    sae_from_released,
    sae_to_released,
    sarm_decode,
    sarm_encode,
    save_sae,
)

PAIR = ("What is the capital of France?", "Paris is the capital of France.")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_released_checkpoint(tmp_path_factory.mktemp("c") / "m", seed=1)


@pytest.fixture(scope="module")
def model(ckpt):
    return load_sarm(ckpt)


def test_remote_code_is_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("SARM_REMOTE_CODE_MARKER", str(marker))
    path = make_released_checkpoint(tmp_path / "m", seed=2)
    assert "auto_map" in json.loads((path / "config.json").read_text())
    load_sarm(path).score(*PAIR)
    assert not marker.exists()


def test_our_layout_round_trip(model, tmp_path):
    out = save_sarm(model, tmp_path / "ours", include_backbone=True)
    assert (out / "sarm.json").is_file() and (out / "sae" / "cfg.json").is_file()
    again = load_sarm(out)
    assert again.score(*PAIR).reward == pytest.approx(model.score(*PAIR).reward, abs=1e-6)
    assert again.fingerprint()["sae"] == model.fingerprint()["sae"]


def test_our_layout_referencing_backbone(model, ckpt, tmp_path):
    edited = Head(model.head.weight * 2.0, 0.5)
    model_copy = load_sarm(ckpt)
    model_copy.set_head(edited)
    out = save_sarm(model_copy, tmp_path / "ref")
    manifest = json.loads((out / "sarm.json").read_text())
    assert manifest["backbone"]["name"] == str(ckpt.resolve())
    again = load_sarm(out)
    expected = 2.0 * (model.score(*PAIR).reward - model.head.bias) + 0.5
    assert again.score(*PAIR).reward == pytest.approx(expected, abs=1e-5)


def test_released_conversion_round_trip(ckpt):
    tensors = {k: v for k, v in load_file(str(ckpt / "model.safetensors")).items() if "sae." in k}
    sae = sae_from_released(tensors, k=8)
    back = sae_to_released(sae)
    for key, value in tensors.items():
        assert torch.equal(back[key], value)
    u = torch.randn(5, sae.cfg.d_in)
    values, indices = sarm_encode(sae, u, k=8)
    a = (u - tensors["sae.pre_bias"]) @ tensors["sae.encoder.weight"].T + tensors["sae.latent_bias"]
    assert torch.allclose(values, torch.topk(a, 8).values, atol=1e-5)
    z = torch.zeros(5, sae.cfg.d_sae).scatter(-1, indices, values)
    recon = z @ tensors["sae.decoder.weight"].T + tensors["sae.pre_bias"]
    assert torch.allclose(sarm_decode(sae, values, indices), recon, atol=1e-5)


def test_sae_lens_save_load_keeps_sarm_encoding(model, tmp_path):

    save_sae(model.sae, tmp_path / "sae", model.sae_meta)
    sae, meta = load_sae(tmp_path / "sae")
    assert meta == model.sae_meta
    u = torch.randn(3, sae.cfg.d_in)
    assert torch.equal(sarm_encode(sae, u, meta.k)[0], sarm_encode(model.sae, u, meta.k)[0])


# ----------------------------------------------------------------------------- bad input


def _edit_config(path, fn):
    cfg = json.loads((path / "config.json").read_text())
    fn(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def test_missing_directory_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SARM checkpoint"):
        load_sarm(tmp_path / "nope")


def test_missing_weights(tmp_path):
    path = make_released_checkpoint(tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \.safetensors"):
        load_sarm(path)


def test_missing_shard(tmp_path):
    path = make_released_checkpoint(tmp_path / "m", shards=2)
    next(path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_sarm(path)


def test_config_without_sarm_fields(tmp_path):
    path = make_released_checkpoint(tmp_path / "m")
    _edit_config(path, lambda c: c.pop("sae_k"))
    with pytest.raises(ValueError, match="sae_k"):
        load_sarm(path)


def test_layer_beyond_weights(tmp_path):
    path = make_released_checkpoint(tmp_path / "m", n_layers=4, layer=2)
    _edit_config(path, lambda c: c.update(sae_hidden_state_source_layer=9))
    with pytest.raises(ValueError, match="only 4 decoder layers"):
        load_sarm(path)


def test_sae_dimension_mismatch(tmp_path):
    path = make_released_checkpoint(tmp_path / "m")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["sae.encoder.weight"] = torch.randn(64, 32)  # d=32 but the backbone has 64
    tensors["sae.pre_bias"] = torch.zeros(32)
    tensors["sae.decoder.weight"] = torch.randn(32, 64)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="does not match the backbone hidden size"):
        load_sarm(path)


def test_latent_size_mismatch(tmp_path):
    path = make_released_checkpoint(tmp_path / "m")
    _edit_config(path, lambda c: c.update(sae_latent_size=128))
    with pytest.raises(ValueError, match="sae_latent_size=128"):
        load_sarm(path)


def test_non_finite_head(tmp_path):
    path = make_released_checkpoint(tmp_path / "m")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["score.weight"][0, 3] = float("nan")
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match="non-finite"):
        load_sarm(path)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("", "answer"), "prompt is empty"),
        (("question", "   "), "response is empty"),
        ((None, "answer"), "prompt must be a string"),
        (("question", 42), "response must be a string"),
    ],
)
def test_bad_score_input(model, args, match):
    with pytest.raises(ValueError, match=match):
        model.score(*args)


def test_bad_messages(model):
    with pytest.raises(ValueError, match="last message must be the assistant"):
        model.score(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        model.score(messages=[{"content": "hi"}])
    with pytest.raises(ValueError, match="bare string"):
        model.score_batch(["just text"])
    with pytest.raises(ValueError, match="out of range"):
        model.token_activations(PAIR, [model.d_sae])


def test_cuda_without_gpu_is_clear(ckpt):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the CUDA path is exercised for real elsewhere")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load_sarm(ckpt, device="cuda")


# ----------------------------------------------------------------------------- pooling traps


def test_truncation_keeps_question_and_end_of_turn(ckpt):
    short = load_sarm(ckpt, max_length=48)
    long_response = "word " * 200
    score = short.score("question", long_response)
    assert score.truncated and score.n_truncated > 0 and score.truncated_part == "response"
    assert score.n_tokens == 48 and score.tokens[-1] == "<|eot_id|>"
    assert "question" in "".join(score.tokens)


def test_chatml_pad_equals_eot_pools_final_turn(tmp_path):
    """SmolLM2's trap: pad == <|im_end|>, and a newline follows the final one."""
    model = load_sarm(make_released_checkpoint(tmp_path / "chatml", template="chatml"))
    tok = model.tokenizer
    assert tok.pad_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    score = model.score("a question", "an answer")
    rendered = tok.apply_chat_template(score.conversation, tokenize=False)
    assert rendered.endswith("<|im_end|>\n")
    assert score.tokens[-1] == "<|im_end|>"
    assert score.tokens.count("<|im_end|>") == 2  # pooled at the second, not the first
    batch = model.score_batch([("a question", "an answer"), ("q", "a much longer answer " * 5)])
    assert batch[0].reward == pytest.approx(score.reward, abs=1e-5)
