"""Scoring parity against an independent re-implementation of DESIGN §1's five steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_released_checkpoint
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaConfig, LlamaModel

from sarm import load_sarm, pair_decomposition, score_top

CONVERSATIONS = [
    ("What is 2+2?", "It is 4."),
    ("hi", "hello"),
    (
        "Tell me a long story about a dragon who learns to cook pasta.",
        "Once upon a time a dragon named Ember wanted to cook pasta for her friends, "
        "so she practised boiling water without melting the pot.",
    ),
    ("Why is the sky blue?", "Rayleigh scattering of sunlight by air molecules."),
    ("Unicode?", "Yes: naïve café, 日本語, emoji 🙂."),
]


class Reference:
    """The released equations, written directly on top of a plain LlamaModel."""

    def __init__(self, path):
        cfg = json.loads((path / "config.json").read_text())
        params = cfg.get("sarm_param", cfg)
        self.layer = params["sae_hidden_state_source_layer"]
        self.k = params["sae_k"]
        self.topk = params.get("sarm_use_activation", params.get("sarm_use_topk", True))
        llama_fields = {k: v for k, v in cfg.items() if k in LlamaConfig().to_dict()}
        config = LlamaConfig(**llama_fields)  # all layers, final norm kept
        self.model = LlamaModel(config).eval()
        weights = {}
        for f in sorted(path.glob("*.safetensors")):
            weights |= load_file(str(f))
        base = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
        self.model.load_state_dict(base, strict=True)
        self.w = weights["score.weight"][0].double()
        self.enc = weights["sae.encoder.weight"].double()
        self.b_lat = weights["sae.latent_bias"].double()
        self.b_pre = weights["sae.pre_bias"].double()
        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.eot = self.tok.convert_tokens_to_ids("<|eot_id|>")

    @torch.no_grad()
    def reward(self, prompt: str, response: str) -> tuple[float, torch.Tensor]:
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        text = self.tok.apply_chat_template(msgs, tokenize=False)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        last = max(i for i, t in enumerate(ids) if t == self.eot)  # the final end-of-turn token
        out = self.model(torch.tensor([ids[: last + 1]]), output_hidden_states=True)
        h = out.hidden_states[self.layer][0, -1].double()  # after L layers, no final norm
        u = (h - h.mean()) / (h.std() + 1e-6)  # Bessel's std, eps 1e-6
        a = self.enc @ (u - self.b_pre) + self.b_lat
        z = torch.zeros_like(a)
        if self.topk:
            top = torch.topk(a, self.k)
            z[top.indices] = top.values  # no ReLU
        else:
            z = a
        return float(self.w @ z), z


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_released_checkpoint(tmp_path_factory.mktemp("ckpt"), layer=2, n_layers=4)


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_sarm(checkpoint)


@pytest.fixture(scope="module")
def reference(checkpoint):
    return Reference(checkpoint)


def test_single_scores_match_reference(model, reference):
    for prompt, response in CONVERSATIONS:
        expected, z = reference.reward(prompt, response)
        got = model.score(prompt, response)
        assert abs(got.reward - expected) < 1e-4
        assert set(got.activations) == set(torch.nonzero(z).flatten().tolist())


def test_kept_topk_values_include_negatives(model):
    acts = model.score(*CONVERSATIONS[0]).activations
    assert len(acts) == model.k
    assert min(acts.values()) < 0, "the fixture must exercise the no-ReLU rule"


def test_batched_equals_single(model, reference):
    batch = model.score_batch(CONVERSATIONS, batch_size=3)
    for (prompt, response), score in zip(CONVERSATIONS, batch, strict=True):
        single = model.score(prompt, response)
        assert abs(score.reward - single.reward) < 1e-4
        assert abs(score.reward - reference.reward(prompt, response)[0]) < 1e-4
        assert score.token_ids == single.token_ids


def test_contributions_sum_to_reward(model):
    for score in model.score_batch(CONVERSATIONS):
        assert abs(sum(score.contributions.values()) + score.bias - score.reward) < 1e-9
        w = model.head.weight.astype(np.float64)
        for fid, c in score.contributions.items():
            assert c == pytest.approx(float(w[fid]) * score.activations[fid], rel=1e-9)


def test_pooled_latents_match_scores(model):
    convs = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        for p, r in CONVERSATIONS
    ]
    pooled = model.pooled_latents(convs, batch_size=2)
    for i, score in enumerate(model.score_batch(CONVERSATIONS)):
        assert pooled.rewards[i] == pytest.approx(score.reward, abs=1e-5)
        indices, values = pooled.latents.row(i)
        assert dict(zip(indices.tolist(), values.tolist(), strict=True)) == (
            pytest.approx(score.activations, abs=1e-5)
        )
        assert pooled.n_tokens[i] == score.n_tokens


def test_trajectory_ends_at_reward(model):
    score = model.score(*CONVERSATIONS[2])
    lat = model.token_latents(CONVERSATIONS[2])
    assert len(lat.reward_trajectory) == score.n_tokens
    assert lat.reward_trajectory[-1] == pytest.approx(score.reward, abs=1e-6)
    fids = list(score.activations)[:3]
    acts = model.token_activations(CONVERSATIONS[2], fids)
    assert acts.values.shape == (score.n_tokens, 3)
    for j, f in enumerate(fids):
        assert acts.values[-1, j] == pytest.approx(score.activations[f], abs=1e-6)


def test_attribution_helpers_add_up(model):
    chosen, rejected = model.score_batch(CONVERSATIONS[:2])
    top = score_top(chosen, n=3)
    assert len(top.top) == 3 and top.n_rest == len(chosen.contributions) - 3
    assert top.total == pytest.approx(chosen.reward, abs=1e-9)
    pair = pair_decomposition(chosen, rejected)
    assert sum(pair.deltas.values()) == pytest.approx(chosen.reward - rejected.reward, abs=1e-9)
    assert pair.top(4).total == pytest.approx(pair.margin, abs=1e-9)


def test_multi_turn_messages(model, reference):
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello, how can I help?"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
    ]
    score = model.score(messages=msgs)
    assert score.tokens[-1] == "<|eot_id|>"
    assert score.n_tokens > model.score(*CONVERSATIONS[0]).n_tokens


@pytest.mark.parametrize(
    "variant",
    [
        {"nested": True},
        {"flag": "sarm_use_topk"},
        {"shards": 3},
        {"use_activation": False},
    ],
    ids=["sarm_param", "sarm_use_topk", "sharded", "no-topk"],
)
def test_layout_variants_match_reference(tmp_path, variant):
    path = make_released_checkpoint(tmp_path / "v", seed=3, **variant)
    model, ref = load_sarm(path), Reference(path)
    for prompt, response in CONVERSATIONS[:3]:
        assert abs(model.score(prompt, response).reward - ref.reward(prompt, response)[0]) < 1e-4
    if variant.get("use_activation") is False:
        assert len(model.score(*CONVERSATIONS[0]).activations) == model.d_sae


def test_only_first_layers_are_built(model):
    assert len(model.backbone.model.layers) == 2
    assert isinstance(model.backbone.model.norm, torch.nn.Identity)
