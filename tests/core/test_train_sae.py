"""TopK SAE training with sae-lens: quality, SARM-path metrics, save/load, streaming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tokenizer, tiny_llama_config
from sae_lens import TopKSAE
from transformers import LlamaModel

from sarm.backbones import load_backbone
from sarm.saes import sarm_encode
from sarm.train.metrics import sae_metrics
from sarm.train.sae import (
    SAETrainConfig,
    load_trained_sae,
    make_training_sae,
    to_inference_sae,
    train_sae,
)
from sarm.types import pair_conversation
from workflows.cli import main

D_IN, D_SAE, K = 64, 256, 8


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: tiny ops are faster without OpenMP hand-offs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def standardise_np(x: np.ndarray) -> np.ndarray:
    """DESIGN §1 step 2, written independently: Bessel std, eps 1e-6."""
    return (x - x.mean(1, keepdims=True)) / (x.std(1, ddof=1, keepdims=True) + 1e-6)


def sparse_activations(n: int, seed: int = 0, n_atoms: int = 128, active: int = 4) -> torch.Tensor:
    """Standardised sparse combinations of a hidden unit-norm dictionary."""
    rng = np.random.default_rng(seed)
    atoms = np.random.default_rng(123).standard_normal((n_atoms, D_IN))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    idx = np.stack([rng.choice(n_atoms, size=active, replace=False) for _ in range(n)])
    coef = rng.uniform(0.5, 2.5, size=(n, active, 1))
    x = (coef * atoms[idx]).sum(1)
    return torch.from_numpy(standardise_np(x).astype(np.float32))


def reference_metrics(sae, u: np.ndarray, k: int) -> dict[str, float]:
    """SARM encode/decode and the metrics, in float64 numpy."""
    w_enc, b_enc = sae.W_enc.detach().double().numpy(), sae.b_enc.detach().double().numpy()
    w_dec, b_dec = sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy()
    u = u.astype(np.float64)
    a = (u - b_dec) @ w_enc + b_enc
    top = np.argpartition(-a, k - 1, axis=1)[:, :k]
    z = np.zeros_like(a)
    np.put_along_axis(z, top, np.take_along_axis(a, top, 1), axis=1)  # no ReLU
    e = u - (z @ w_dec + b_dec)
    total = ((u - u.mean(0)) ** 2).sum()
    return {
        "normalized_mse": (e**2).sum() / total,
        "explained_variance": 1 - ((e - e.mean(0)) ** 2).sum() / total,
        "mean_l0": (z != 0).sum(1).mean(),
        "dead_fraction": float(((z != 0).sum(0) == 0).mean()),
        "negative_kept_fraction": float((np.take_along_axis(a, top, 1) < 0).mean()),
    }


def small_cfg(**kw) -> SAETrainConfig:
    base = dict(d_sae=D_SAE, k=K, n_epochs=60, batch_size=32, lr=5e-3, dead_feature_window=50)
    return SAETrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return train_sae(sparse_activations(400), D_IN, small_cfg(), progress=False)


def test_training_reduces_normalised_mse_well_below_one(trained):
    m = trained.metrics
    assert isinstance(trained.sae, TopKSAE)
    assert m["untrained_normalized_mse"] > 0.9
    assert m["normalized_mse"] < 0.3
    assert m["explained_variance"] > 0.7
    assert m["mean_l0"] == K and m["n_eval"] == 40
    held_out = sae_metrics(trained.sae, sparse_activations(300, seed=7), K)
    assert held_out["normalized_mse"] < 0.3


def test_metrics_match_an_independent_numpy_computation(trained):
    u = sparse_activations(300, seed=5)
    got = sae_metrics(trained.sae, u, K, batch_size=64)
    want = reference_metrics(trained.sae, u.numpy(), K)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_metrics_count_negative_values_and_dead_latents():
    """A random SAE with a negative latent bias: kept values are negative, not ReLU'd."""
    sae = to_inference_sae(make_training_sae(D_IN, small_cfg()))
    with torch.no_grad():
        sae.b_enc.fill_(-5.0)
    u = sparse_activations(50, seed=3)
    got = sae_metrics(sae, u, K)
    want = reference_metrics(sae, u.numpy(), K)
    assert got["negative_kept_fraction"] == pytest.approx(want["negative_kept_fraction"]) == 1.0
    assert got["dead_fraction"] == pytest.approx(want["dead_fraction"])
    assert 0 < got["dead_fraction"] < 1


def test_inference_conversion_keeps_sae_lens_topk_selection():
    train_sae_ = make_training_sae(D_IN, small_cfg())
    with torch.no_grad():  # decoder rows of unequal norm, so folding matters
        train_sae_.W_dec.mul_(torch.linspace(0.2, 3.0, D_SAE).unsqueeze(1))
        train_sae_.b_enc.normal_()
    u = sparse_activations(64, seed=2)
    sae = to_inference_sae(train_sae_)
    assert not sae.cfg.rescale_acts_by_decoder_norm
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(D_SAE))
    values, indices = sarm_encode(sae, u, K)
    z = torch.zeros(64, D_SAE).scatter_(1, indices, values.relu())
    with torch.no_grad():
        expected = train_sae_.encode(u)
        torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sae.decode(z), train_sae_.decode(expected), rtol=1e-4, atol=1e-5)


def test_save_load_roundtrip_is_identical(trained, tmp_path):
    out = trained.save(tmp_path / "sae", backbone="tiny-llama", layer=2)
    assert {"cfg.json", "sae_weights.safetensors", "sarm_sae.json"} <= {
        p.name for p in out.iterdir()
    }
    sae, meta = load_trained_sae(out)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(sae, name), getattr(trained.sae, name)), name
    u = sparse_activations(20, seed=9)
    for a, b in zip(sarm_encode(sae, u, K), sarm_encode(trained.sae, u, K), strict=True):
        assert torch.equal(a, b)
    assert meta["backbone"] == "tiny-llama" and meta["layer"] == 2
    assert meta["standardisation"] == {"kind": "sarm", "eps": 1e-6, "bessel": True}
    assert meta["mode"] == "tokens" and meta["k"] == K and meta["use_activation"] is True
    assert meta["metrics"] == pytest.approx(trained.metrics)
    assert SAETrainConfig.from_dict(meta["train_config"]) == trained.config
    assert json.loads((out / "cfg.json").read_text())["architecture"] == "topk"


def test_same_seed_same_sae_and_chunks_equal_matrix():
    u = sparse_activations(200)
    cfg = small_cfg(n_epochs=2)
    a = train_sae(u, D_IN, cfg, progress=False)
    b = train_sae(list(u.split(37)), D_IN, cfg, progress=False)
    assert torch.equal(a.sae.W_enc, b.sae.W_enc) and a.metrics == b.metrics


def test_streamed_training_and_running_out():
    u = sparse_activations(600)
    cfg = small_cfg(stream=True, total_samples=480, shuffle_buffer=128)
    res = train_sae(iter(u.split(50)), D_IN, cfg, progress=False)
    assert res.history["n_training_samples"] == 480 and res.metrics["n_eval"] == 48
    assert res.metrics["normalized_mse"] < res.metrics["untrained_normalized_mse"]
    with pytest.raises(ValueError, match="ran out after"):
        train_sae(iter(u[:300].split(50)), D_IN, cfg, progress=False)


def test_bad_activations_are_named():
    with pytest.raises(ValueError, match=r"activations: expected shape \[n, 64\], got \(10, 32\)"):
        train_sae(torch.zeros(10, 32), D_IN, small_cfg())
    u = sparse_activations(100)
    u[17, 3] = float("nan")
    with pytest.raises(ValueError, match="row 17 has NaN"):
        train_sae(u, D_IN, small_cfg())
    chunks = [sparse_activations(10), torch.zeros(5, 3)]
    with pytest.raises(ValueError, match="activation batch 1"):
        train_sae(chunks, D_IN, small_cfg())
    with pytest.raises(ValueError, match="less than one batch"):
        train_sae(sparse_activations(20), D_IN, small_cfg(n_epochs=1.0))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"mode": "pooled"}, "mode"),
        ({"k": 300}, "exceeds d_sae"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"stream": True}, "needs total_samples"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"lr_warm_up_fraction": 0.5, "lr_decay_fraction": 0.5}, "must be < 1"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        small_cfg(**kw)


def test_config_dict_roundtrip():
    cfg = small_cfg(mode="last", lr_schedule="cosine")
    assert SAETrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        SAETrainConfig.from_dict({"d_sea": 3})


# --------------------------------------------------------------------------- tiny real backbone


def tiny_backbone_dir(directory, seed: int = 0, n_layers: int = 3):
    """A plain Hugging Face Llama directory (random weights, byte tokenizer, ChatML)."""

    torch.manual_seed(seed)
    tok = make_tokenizer("chatml")
    config = tiny_llama_config(len(tok), n_layers=n_layers, d_model=D_IN)
    LlamaModel(config).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return directory


def write_pairs_jsonl(path, n: int = 24, seed: int = 0):
    """Prompt/chosen/rejected rows of short random texts."""
    rng = np.random.default_rng(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "sun",
        "moon",
        "tree",
        "river",
        "stone",
        "cloud",
        "fire",
        "ice",
    ]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(lo, hi))))

    rows = [
        {"prompt": text(3, 6), "chosen": text(4, 10), "rejected": text(4, 10)} for _ in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    return tiny_backbone_dir(tmp_path_factory.mktemp("bb") / "tiny-llama")


def test_train_on_a_tiny_backbone_tokens_and_last(backbone_dir, tmp_path):

    bb = load_backbone(str(backbone_dir), layer=2)
    convs = [
        pair_conversation(f"question {i}", f"answer number {i} " * (1 + i % 4)) for i in range(40)
    ]
    tokens = torch.cat(list(bb.iter_activations(convs, 8, mode="tokens", progress=False)))
    assert tokens.shape[0] > 400 and tokens.shape[1] == D_IN
    np.testing.assert_allclose(tokens.mean(1).numpy(), 0.0, atol=1e-5)  # standardised rows
    cfg = small_cfg(d_sae=128, n_epochs=15)
    res = train_sae(
        bb.iter_activations(convs, 8, mode="tokens", progress=False), D_IN, cfg, progress=False
    )
    assert res.metrics["normalized_mse"] < 0.5 * res.metrics["untrained_normalized_mse"]
    last = small_cfg(d_sae=128, mode="last", batch_size=8, n_epochs=30, eval_fraction=0.2)
    res_last = train_sae(
        bb.iter_activations(convs, 8, mode="last", progress=False), D_IN, last, progress=False
    )
    assert res_last.metrics["n_eval"] == 8
    out = res_last.save(tmp_path / "sae-last", backbone=str(backbone_dir), layer=2)
    assert json.loads((out / "sarm_sae.json").read_text())["mode"] == "last"


def test_cli_train_sae(backbone_dir, tmp_path, capsys):

    data = write_pairs_jsonl(tmp_path / "pairs.jsonl")
    out = tmp_path / "sae"
    argv = ["train-sae", "--backbone", str(backbone_dir), "--layer", "2", "--data", str(data)]
    argv += [
        "--out",
        str(out),
        "--d-sae",
        "128",
        "--k",
        "8",
        "--epochs",
        "10",
        "--batch-size",
        "32",
    ]
    assert main([*argv, "--lr", "5e-3", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_responses"] == 48 and report["normalized_mse"] < 0.6
    sae, meta = load_trained_sae(out)
    assert meta["backbone"] == str(backbone_dir.resolve()) and meta["layer"] == 2
    assert sae.cfg.d_sae == 128 and meta["metrics"]["normalized_mse"] == report["normalized_mse"]


def test_cli_train_sae_errors_are_clear(backbone_dir, tmp_path, capsys):

    data = write_pairs_jsonl(tmp_path / "pairs.jsonl", n=4)
    argv = ["train-sae", "--backbone", str(backbone_dir), "--layer", "9", "--data", str(data)]
    assert main([*argv, "--out", str(tmp_path / "o"), "--d-sae", "16", "--k", "4"]) == 2
    assert "layer L=9 is out of range" in capsys.readouterr().err
    argv[4] = "2"
    assert main([*argv, "--out", str(tmp_path / "o"), "--d-sae", "16", "--k", "32"]) == 2
    assert "k=32 exceeds d_sae=16" in capsys.readouterr().err
