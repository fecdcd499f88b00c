"""Tiny models and checkpoints built in tests (no network, seconds to build)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

from sarm import load_sarm

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REMOTE_CODE = """
import os, pathlib
pathlib.Path(os.environ.get("SARM_REMOTE_CODE_MARKER", "/tmp/sarm_remote_code_ran")).write_text("ran")
raise RuntimeError("remote code must never be executed")
"""


def make_tokenizer(template: str = "llama3"):
    """A byte-level BPE tokenizer (256 byte tokens, no merges) with a chat template."""

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    if template == "llama3":
        specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        specials.append("<|pad|>")
        kw = {"bos_token": specials[0], "eos_token": "<|eot_id|>", "pad_token": "<|pad|>"}
        chat = LLAMA3_TEMPLATE
    elif template == "chatml":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        # the SmolLM2 trap: pad is the end-of-turn token
        kw = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
        chat = CHATML_TEMPLATE
    else:
        raise ValueError(template)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    fast.add_special_tokens({"additional_special_tokens": specials})
    fast.chat_template = chat
    return fast


def tiny_llama_config(vocab_size: int, n_layers: int = 4, d_model: int = 64):

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def random_sae_tensors(d: int, m: int, seed: int = 0, negative: bool = True):
    """Released-layout SAE tensors; a negative latent bias makes kept values negative."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(m, d, generator=g) / d**0.5
    lat_bias = torch.randn(m, generator=g) * 0.1 - (1.5 if negative else 0.0)
    return {
        "sae.encoder.weight": enc,
        "sae.latent_bias": lat_bias,
        "sae.decoder.weight": torch.randn(d, m, generator=g) / m**0.5,
        "sae.pre_bias": torch.randn(d, generator=g) * 0.1,
    }


def make_released_checkpoint(
    directory: Path,
    *,
    seed: int = 0,
    n_layers: int = 4,
    layer: int = 2,
    d_model: int = 64,
    d_sae: int = 64,
    k: int = 8,
    template: str = "llama3",
    nested: bool = False,
    flag: str = "sarm_use_activation",
    use_activation: bool = True,
    shards: int = 1,
) -> Path:
    """Write a tiny random checkpoint in the released Llama-SARM layout."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = make_tokenizer(template)
    config = tiny_llama_config(len(tok), n_layers, d_model)
    config.pad_token_id = tok.pad_token_id
    model = LlamaModel(config).eval()
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors |= random_sae_tensors(d_model, d_sae, seed)
    g = torch.Generator().manual_seed(seed + 1)
    tensors["score.weight"] = torch.randn(1, d_sae, generator=g)
    _write_shards(directory, tensors, shards)
    fields = {
        "sae_latent_size": d_sae,
        "sae_k": k,
        "sae_hidden_state_source_layer": layer,
        "sae_use_sequence_level": True,
        flag: use_activation,
    }
    cfg = config.to_dict()
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_sarm.LlamaSARM"}
    cfg["architectures"] = ["LlamaSARM"]
    cfg |= {"sarm_param": fields} if nested else fields
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    (directory / "modeling_sarm.py").write_text(REMOTE_CODE)
    tok.save_pretrained(str(directory))
    return directory


def _write_shards(directory: Path, tensors: dict, shards: int) -> None:
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"))
        return
    keys = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[s::shards]}
        save_file(part, str(directory / name))
        weight_map |= {k: name for k in part}
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def make_tiny_sarm(tmp_path: Path, seed: int = 0, d_sae: int = 64, k: int = 8, **kw):
    """A loaded tiny SARM (random weights) built from a released-layout checkpoint."""

    path = make_released_checkpoint(
        Path(tmp_path) / f"tiny-sarm-{seed}", seed=seed, d_sae=d_sae, k=k, **kw
    )
    return load_sarm(path)
