"""The SAE-error column (sarm.residual): r = w.z + w_err.e + b, checked against a direct reference."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_sarm

from sarm import load_sarm
from sarm.checkpoints import save_sarm
from sarm.configs import HeadTrainConfig
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.model import SARM
from sarm.residual import ErrorReadout, decompose_dense, error_share, with_error_column
from sarm.train.head import train_error_head

PAIRS = [
    ("What is 2+2?", "It is 4."),
    ("hi", "hello there, how can I help?"),
    ("Why is the sky blue?", "Rayleigh scattering of sunlight by air molecules."),
]


def unit(rng, d):
    v = rng.normal(size=d)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    base = make_tiny_sarm(tmp_path_factory.mktemp("tiny"), d_sae=64, k=8)
    rng = np.random.default_rng(3)
    readout = ErrorReadout(unit(rng, base.backbone.d_model))
    weights = rng.normal(0, 0.3, base.n_sae_latents + 1).astype(np.float32)
    head = Head(weights, 0.25)
    model = SARM(base.backbone, base.sae, head, base.sae_meta, error_readout=readout)
    return base, model, readout, weights


def reference_rewards(base: SARM, readout: ErrorReadout, weights: np.ndarray, bias: float):
    """The equations written out: TopK of the SAE pre-activations, decode, project the error."""
    pooled = base.pooled_latents([list(c) for c in map(_conv, PAIRS)], return_hidden=True)
    u = pooled.hidden.astype(np.float64)
    w_enc = base.sae.W_enc.detach().double().numpy()
    b_enc, b_dec = (
        base.sae.b_enc.detach().double().numpy(),
        base.sae.b_dec.detach().double().numpy(),
    )
    w_dec = base.sae.W_dec.detach().double().numpy()
    a = (u - b_dec) @ w_enc + b_enc
    z = np.zeros_like(a)
    top = np.argsort(-a, axis=1)[:, : base.k]
    np.put_along_axis(z, top, np.take_along_axis(a, top, axis=1), axis=1)
    e = u - (z @ w_dec + b_dec)
    m = base.n_sae_latents
    return z @ weights[:m] + weights[m] * (e @ readout.direction) + bias, e @ readout.direction


def _conv(pair):
    return [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]


def test_rewards_match_the_written_out_equations(pieces):
    base, model, readout, weights = pieces
    expected, errors = reference_rewards(base, readout, weights, 0.25)
    scores = model.score_batch(PAIRS)
    got = np.array([s.reward for s in scores])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    m = model.n_sae_latents
    assert model.d_sae == m + 1 and model.error_feature == m
    for s, err in zip(scores, errors, strict=True):
        assert s.error_feature == m
        assert s.activations[m] == pytest.approx(err, rel=1e-4, abs=1e-5)
        assert s.error_contribution == pytest.approx(weights[m] * err, rel=1e-4, abs=1e-5)
        assert sum(s.contributions.values()) + s.bias == pytest.approx(s.reward, abs=1e-5)


def test_pooled_and_token_paths_agree(pieces):
    _, model, _, _ = pieces
    convs = [_conv(p) for p in PAIRS]
    pooled = model.pooled_latents(convs)
    scores = model.score_batch(PAIRS)
    np.testing.assert_allclose(pooled.rewards, [s.reward for s in scores], atol=1e-5)
    acts = model.token_activations(convs[1], [model.error_feature])
    assert acts.values[-1, 0] == pytest.approx(scores[1].activations[model.error_feature], abs=1e-5)
    assert acts.reward_trajectory[-1] == pytest.approx(scores[1].reward, abs=1e-5)


def test_zeroing_the_error_weight_gives_the_sae_only_reward(pieces):
    base, model, _, weights = pieces
    m = model.n_sae_latents
    model_no_err = SARM(base.backbone, base.sae, Head(weights[:m], 0.25), base.sae_meta)
    edited = model.head.edit({m: 0.0})
    pooled = model.pooled_latents([_conv(p) for p in PAIRS])
    np.testing.assert_allclose(
        edited.rewards(pooled.latents),
        [s.reward for s in model_no_err.score_batch(PAIRS)],
        atol=1e-5,
    )


def test_save_and_load_keep_the_readout(pieces, tmp_path):
    _, model, readout, _ = pieces
    save_sarm(model, tmp_path / "m")
    loaded = load_sarm(tmp_path / "m")
    assert loaded.error_readout is not None
    np.testing.assert_array_equal(loaded.error_readout.direction, readout.direction)
    assert loaded.fingerprint() == model.fingerprint()
    np.testing.assert_allclose(
        [s.reward for s in loaded.score_batch(PAIRS)],
        [s.reward for s in model.score_batch(PAIRS)],
        atol=1e-6,
    )


def test_the_readout_is_part_of_the_fingerprint(pieces):
    base, model, _, _ = pieces
    other = SARM(
        base.backbone, base.sae, model.head, base.sae_meta,
        error_readout=ErrorReadout(unit(np.random.default_rng(9), base.backbone.d_model)),
    )  # fmt: skip
    assert other.fingerprint()["sae"] != model.fingerprint()["sae"]


def test_bad_readouts_and_heads_are_refused(pieces):
    base, _, readout, weights = pieces
    with pytest.raises(ValueError, match="unit norm"):
        ErrorReadout(np.full(base.backbone.d_model, 0.5))
    with pytest.raises(ValueError, match="non-finite"):
        ErrorReadout(np.full(base.backbone.d_model, np.nan))
    with pytest.raises(ValueError, match="plus the SAE-error column"):
        SARM(base.backbone, base.sae, Head(weights[:-1]), base.sae_meta, error_readout=readout)
    with pytest.raises(ValueError, match="error readout has 3 entries"):
        SARM(base.backbone, base.sae, Head(weights), base.sae_meta,
             error_readout=ErrorReadout(np.array([1.0, 0.0, 0.0])))  # fmt: skip


def test_readout_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="error readout file not found"):
        ErrorReadout.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match=r"bad\.safetensors"):
        ErrorReadout.load(bad)


def test_from_weights_and_error_column():
    readout, scale = ErrorReadout.from_weights(np.array([3.0, 4.0]))
    assert scale == pytest.approx(5.0)
    np.testing.assert_allclose(readout.direction, [0.6, 0.8])
    lat = SparseLatents.from_rows([np.array([1, 0]), np.array([], int)], [np.array([2.0, 1.0]),
                                  np.array([], float)], 3)  # fmt: skip
    out = with_error_column(lat, np.array([0.5, -1.5]))
    assert out.d_sae == 4
    np.testing.assert_array_equal(out.dense(), [[1.0, 2.0, 0.0, 0.5], [0, 0, 0, -1.5]])
    with pytest.raises(ValueError, match="3 error values for 2 rows"):
        with_error_column(lat, np.zeros(3))
    assert error_share(np.array([1.0, -1.0]), np.array([1.0, -1.0])) == pytest.approx(0.25)
    assert error_share(np.zeros(3), np.zeros(3)) == 0.0


def test_the_decomposed_dense_probe_gives_the_dense_reward(pieces):
    """decompose_dense: features + error + bias reproduce w_d . u_T + b on real SAE outputs."""
    base, _, _, _ = pieces
    rng = np.random.default_rng(5)
    w_d, b = rng.normal(size=base.backbone.d_model), 0.7
    sae = base.sae
    head, readout = decompose_dense(w_d, b, sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy())
    model = SARM(base.backbone, sae, head, base.sae_meta, error_readout=readout)
    pooled = base.pooled_latents([_conv(p) for p in PAIRS], return_hidden=True)
    expected = pooled.hidden.astype(np.float64) @ w_d + b
    np.testing.assert_allclose([s.reward for s in model.score_batch(PAIRS)], expected, atol=1e-4)


def test_joint_training_finds_a_preference_only_the_error_carries():
    """Pairs decided by a direction the latents do not see: the readout learns that direction."""
    rng = np.random.default_rng(0)
    n, k, m, d = 1200, 4, 32, 6  # 600 disjoint pairs (rows 2i, 2i + 1)
    idx = np.stack([rng.choice(m, k, replace=False) for _ in range(n)])
    vals = rng.uniform(0.5, 1.5, (n, k)).astype(np.float32)
    target = unit(rng, d)
    errors = rng.normal(size=(n, d)).astype(np.float32)
    score = errors @ target
    a, b = np.arange(0, n, 2), np.arange(1, n, 2)
    chosen, rejected = np.where(score[a] > score[b], a, b), np.where(score[a] > score[b], b, a)
    head, readout, result = train_error_head(
        vals, idx, errors, chosen, rejected, HeadTrainConfig(max_epochs=300), n_latents=m
    )
    assert head.size == m + 1
    assert float(readout.direction @ target) > 0.95
    assert np.abs(head.weight[:m]).max() < 0.2 * head.weight[m]
    assert result.summary()["val_accuracy"] > 0.9
