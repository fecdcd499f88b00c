"""The multi-layer capture: values equal a backbone cut at each layer; parts resume exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_sae import tiny_backbone_dir

from sarm.backbones import load_backbone
from sarm.saes import standardize
from sarm.train.capture import capture_layers, response_start, sample_positions

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"]


def conversations(n: int = 7) -> list:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS, 3 + i % 4))
        answer = " ".join(rng.choice(WORDS, 2 + (3 * i) % 9))
        out.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return out


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    return tiny_backbone_dir(tmp_path_factory.mktemp("bb"), n_layers=3)


def single_row_u(directory, layer: int, conv) -> torch.Tensor:
    """Standardised activations of one conversation, from a backbone cut at ``layer``."""
    bb = load_backbone(str(directory), layer)
    return standardize(bb.hidden_states(bb.encode([conv])))[0]


def test_pooled_values_equal_a_backbone_cut_at_each_layer(backbone_dir, tmp_path):
    convs = conversations()
    bb = load_backbone(str(backbone_dir), 3)
    cap = capture_layers(bb, convs, [1, 2, 3], tmp_path / "c", tokens_per_row=4, part_rows=3,
                         progress=False)  # fmt: skip
    assert cap.layers == (1, 2, 3) and len(cap) == len(convs)
    for layer in (1, 2, 3):
        for i, conv in enumerate(convs):
            expected = single_row_u(backbone_dir, layer, conv)[-1]
            torch.testing.assert_close(cap.final[layer][i], expected, atol=1e-4, rtol=1e-4)


def test_token_sample_comes_from_the_response(backbone_dir, tmp_path):
    convs = conversations()
    bb = load_backbone(str(backbone_dir), 2)
    cap = capture_layers(bb, convs, [2], tmp_path / "c", tokens_per_row=3, progress=False)
    for i, conv in enumerate(convs):
        ids, _ = bb.encoder.token_ids(conv)
        u = single_row_u(backbone_dir, 2, conv)
        marker = bb.tokenizer.convert_tokens_to_ids("<|im_start|>")
        start = response_start(ids, marker, lambda t: "\n" in bb.tokenizer.decode([t]))
        assert bb.tokenizer.decode(ids[start:]).startswith(conv[-1]["content"][:5])
        sampled = cap.tokens[2][cap.token_row == i].float()
        assert 1 <= len(sampled) <= 3
        dist = torch.cdist(sampled, u)  # each sampled vector is one of the row's positions
        nearest = dist.argmin(1)
        assert torch.all(dist.min(1).values < 1e-2)
        assert torch.all(nearest >= start)


def test_sample_positions_depend_on_row_only():
    a = sample_positions(10, 90, 5, seed=3, row=7)
    assert np.array_equal(a, sample_positions(10, 90, 5, seed=3, row=7))
    assert not np.array_equal(a, sample_positions(10, 90, 5, seed=3, row=8))
    assert np.all(np.diff(a) > 0) and a.min() >= 10 and a.max() <= 90
    assert np.array_equal(sample_positions(4, 6, 5, seed=0, row=0), [4, 5, 6])


def test_parts_resume_and_a_new_plan_recomputes(backbone_dir, tmp_path):
    convs = conversations()
    bb = load_backbone(str(backbone_dir), 2)
    out = tmp_path / "c"
    first = capture_layers(bb, convs, [1, 2], out, tokens_per_row=2, part_rows=3, progress=False)
    (out / "part-00001.safetensors").unlink()
    stamp = (out / "part-00000.safetensors").stat().st_mtime_ns
    again = capture_layers(bb, convs, [1, 2], out, tokens_per_row=2, part_rows=3, progress=False)
    assert (out / "part-00000.safetensors").stat().st_mtime_ns == stamp  # kept, not recomputed
    assert torch.equal(first.tokens[2], again.tokens[2])
    assert torch.equal(first.final[1], again.final[1])
    other = capture_layers(bb, convs, [1, 2], out, tokens_per_row=1, part_rows=3, progress=False)
    assert len(other.token_row) == len(convs)  # one token per row: the parts were redone


def test_layers_beyond_the_cut_are_refused(backbone_dir, tmp_path):
    bb = load_backbone(str(backbone_dir), 2)
    with pytest.raises(ValueError, match=r"within 1\.\.2"):
        capture_layers(bb, conversations(2), [3], tmp_path / "c", progress=False)
