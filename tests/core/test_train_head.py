"""Bradley-Terry head training on synthetic cached latents with a known sparse true head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
import torch
from helpers import make_released_checkpoint
from test_train_sae import small_cfg, tiny_backbone_dir, write_pairs_jsonl

from sarm import load_sarm
from sarm.backbones import load_backbone
from sarm.data import load_preferences
from sarm.evaluate import PairIndex, pairwise_accuracy
from sarm.head import Head
from sarm.scoring import response_conversations
from sarm.train.head import (
    HeadTrainConfig,
    as_latent_rows,
    pair_groups,
    split_pairs,
    train_bt_head,
    train_dense_baseline,
)
from sarm.train.sae import train_sae
from sarm.types import pair_conversation
from workflows.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: tiny ops are faster without OpenMP hand-offs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sparse_problem(n_resp=1200, m=256, k=16, n_true=8, noise=None, seed=0):
    """Top-k style latents, a sparse true head and pairs labelled by the true reward.

    Responses are paired (0, 1), (2, 3), ...; the one with the higher true reward
    is chosen (``noise=None``) or BT-sampled at temperature ``noise``.
    """
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(m, size=k, replace=False) for _ in range(n_resp)])
    val = rng.uniform(0.0, 3.0, size=(n_resp, k)).astype(np.float32)
    x = np.zeros((n_resp, m), np.float32)
    np.put_along_axis(x, idx, val, axis=1)
    w_true = np.zeros(m)
    support = rng.choice(m, size=n_true, replace=False)
    w_true[support] = rng.choice([-1.0, 1.0], size=n_true) * rng.uniform(1.0, 2.0, size=n_true)
    r = x @ w_true
    a, b = np.arange(0, n_resp, 2), np.arange(1, n_resp, 2)
    if noise is None:  # clean labels: drop pairs the true head cannot tell apart
        keep = np.abs(r[a] - r[b]) > 0.1
        a, b = a[keep], b[keep]
        a_wins = r[a] > r[b]
    else:  # Bradley-Terry sampled labels
        a_wins = rng.random(len(a)) < 1 / (1 + np.exp(-(r[a] - r[b]) / noise))
    chosen, rejected = np.where(a_wins, a, b), np.where(a_wins, b, a)
    return x, idx, val, w_true, support, chosen, rejected


def bt_loss_np(w, x, chosen, rejected):
    d = x[chosen] @ w - x[rejected] @ w
    return float(np.mean(np.logaddexp(0.0, -d)))


def test_bt_loss_decreases_and_true_signs_recovered():
    x, _, _, w_true, support, c, r = sparse_problem(m=128, k=24)
    res = train_bt_head(x, c, r, HeadTrainConfig(val_fraction=0.2))
    losses = [h["train_loss"] for h in res.history]
    assert losses[res.best_epoch - 1] < losses[0] < np.log(2)  # log 2 is the loss at w = 0
    assert losses[res.best_epoch - 1] < 0.5 * np.log(2)
    w = res.weight.numpy().astype(np.float64)
    top = np.argsort(-np.abs(w))[: len(support)]
    assert set(top) == set(support)
    assert np.array_equal(np.sign(w[top]), np.sign(w_true[top]))
    best = res.history[res.best_epoch - 1]
    assert best["val_accuracy"] > 0.9 and res.n_val_pairs > 0


def test_reported_loss_matches_numpy_reference():
    x, _, _, _, _, c, r = sparse_problem(n_resp=400, m=64)
    res = train_bt_head(x, c, r, HeadTrainConfig(val_fraction=0.0, max_epochs=40))
    assert res.n_val_pairs == 0 and len(res.history) == 40
    ref = bt_loss_np(res.weight.numpy().astype(np.float64), x.astype(np.float64), c, r)
    assert res.history[res.best_epoch - 1]["train_loss"] == pytest.approx(ref, rel=1e-5)
    d = x[c] @ res.weight.numpy() - x[r] @ res.weight.numpy()
    assert res.history[res.best_epoch - 1]["train_accuracy"] == pytest.approx(np.mean(d > 0))


def test_fista_with_l1_solves_the_lasso_objective():
    """KKT conditions of mean BT + l1 |w|_1, checked with a numpy gradient."""
    x, _, _, _, _, c, r = sparse_problem(n_resp=600, m=32, k=8, n_true=4, noise=1.0)
    l1 = 0.01
    cfg = HeadTrainConfig(val_fraction=0.0, l1=l1, max_epochs=3000, patience=3000, min_delta=0.0)
    w = train_bt_head(x, c, r, cfg).weight.numpy().astype(np.float64)
    d = (x[c] - x[r]).astype(np.float64)
    grad = -(d * (1 / (1 + np.exp(d @ w)))[:, None]).mean(0)
    on = w != 0
    assert on.any() and (~on).any()
    np.testing.assert_allclose(grad[on], -l1 * np.sign(w[on]), atol=2e-4)
    assert np.all(np.abs(grad[~on]) <= l1 + 2e-4)


def test_early_stopping_returns_best_epoch():
    x, _, _, _, _, c, r = sparse_problem(n_resp=300, m=512, k=32, n_true=20, noise=1.0)
    cfg = HeadTrainConfig(val_fraction=0.3, patience=10, min_delta=0.0, max_epochs=500)
    res = train_bt_head(x, c, r, cfg)
    assert res.stopped_early and len(res.history) == res.best_epoch + cfg.patience
    val = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(val)) + 1


@pytest.mark.parametrize("optimizer", ["fista", "adam"])
def test_l1_gives_a_sparser_head(optimizer):
    x, _, _, _, _, c, r = sparse_problem(noise=0.5)
    base = dict(optimizer=optimizer, lr=0.05, val_fraction=0.0, max_epochs=300)
    dense = train_bt_head(x, c, r, HeadTrainConfig(**base)).weight
    sparse = train_bt_head(x, c, r, HeadTrainConfig(**base, l1=3e-3)).weight

    def near_zero(w):
        return int((w.abs() < 1e-2 * w.abs().max()).sum())

    assert near_zero(sparse) > near_zero(dense) + 50
    if optimizer == "fista":  # the proximal step gives exact zeros
        assert int((sparse == 0).sum()) > 100


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
def test_input_formats_give_the_same_head():
    x, idx, val, _, _, c, r = sparse_problem(n_resp=200, m=64, k=8)
    cfg = HeadTrainConfig(max_epochs=30)
    ref = train_bt_head(x, c, r, cfg).weight
    ragged = (
        [row[row_val > 0] for row, row_val in zip(idx, val, strict=True)],
        list(val[val > 0].reshape(200, -1)),
    )
    formats = {
        "numpy": x,
        "torch": torch.from_numpy(x),
        "topk": (idx, val),
        "ragged": ragged,
        "torch_coo": torch.from_numpy(x).to_sparse(),
        "torch_csr": torch.from_numpy(x).to_sparse_csr(),
        "scipy": scipy.sparse.csr_matrix(x),
    }
    for name, lat in formats.items():
        w = train_bt_head(lat, c, r, cfg, n_features=64).weight
        torch.testing.assert_close(w, ref, rtol=1e-4, atol=1e-5, msg=name)


def test_dense_baseline_learns_on_hidden_states():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((800, 32)).astype(np.float32)
    h = (h - h.mean(1, keepdims=True)) / h.std(1, ddof=1, keepdims=True)
    w_true = rng.standard_normal(32)
    r_true = h @ w_true
    a, b = np.arange(0, 800, 2), np.arange(1, 800, 2)
    c, r = np.where(r_true[a] > r_true[b], a, b), np.where(r_true[a] > r_true[b], b, a)
    res = train_dense_baseline(h, c, r, HeadTrainConfig(val_fraction=0.2))
    w = res.weight.numpy()
    assert w @ w_true / (np.linalg.norm(w) * np.linalg.norm(w_true)) > 0.9
    assert res.history[res.best_epoch - 1]["val_accuracy"] > 0.9
    with pytest.raises(ValueError, match="dense"):
        train_dense_baseline(scipy.sparse.csr_matrix(h), c, r)


def test_deterministic_for_a_seed_and_split_changes_with_it():
    x, _, _, _, _, c, r = sparse_problem(n_resp=300, m=64, noise=1.0)
    cfg = HeadTrainConfig(optimizer="adam", batch_size=32, max_epochs=20)
    torch.testing.assert_close(
        train_bt_head(x, c, r, cfg).weight, train_bt_head(x, c, r, cfg).weight, rtol=0, atol=0
    )
    other = HeadTrainConfig(optimizer="adam", batch_size=32, max_epochs=20, seed=1)
    assert not torch.equal(train_bt_head(x, c, r, cfg).weight, train_bt_head(x, c, r, other).weight)


def test_groups_stay_on_one_side_of_the_split():
    chosen = torch.tensor([0, 0, 0, 4, 6, 8, 10, 12])
    rejected = torch.tensor([1, 2, 3, 5, 7, 9, 11, 13])
    groups = pair_groups(chosen, rejected)
    assert len(set(groups[:3])) == 1 and len(set(groups)) == 6
    train, val = split_pairs(groups, 0.3, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(8))
    for g in set(groups):
        members = set(np.flatnonzero(groups == g))
        assert members <= set(train) or members <= set(val)
    with pytest.raises(ValueError, match="one connected group"):
        split_pairs(np.zeros(5, dtype=int), 0.2, seed=0)


def test_bias_centres_rewards_and_save_roundtrip(tmp_path):
    x, _, _, _, _, c, r = sparse_problem(n_resp=200, m=64)
    res = train_bt_head(x, c, r, HeadTrainConfig(bias=True, max_epochs=30))
    assert (x @ res.weight.numpy() + res.bias).mean() == pytest.approx(0.0, abs=1e-4)
    res.save(tmp_path / "out")
    head = Head.load(tmp_path / "out" / "head.safetensors")
    assert np.array_equal(head.weight, res.weight.numpy()) and head.bias == pytest.approx(res.bias)
    meta = json.loads((tmp_path / "out" / "head_train.json").read_text())
    assert meta["summary"]["best_epoch"] == res.best_epoch
    assert HeadTrainConfig.from_dict(meta["config"]) == res.config


@pytest.mark.parametrize(
    ("chosen", "rejected", "match"),
    [
        ([0, 1], [2], "2 entries"),
        ([0, 9], [1, 2], r"chosen_row\[1\]=9 is out of range"),
        ([0, 1], [1, 1], "compares row 1 with itself"),
        ([], [], "no preference pairs"),
        ([0.0, 1.5], [2, 3], "chosen_row must hold integer"),
    ],
)
def test_bad_pairs_are_named(chosen, rejected, match):
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=match):
        train_bt_head(x, chosen, rejected)


def test_bad_latents_and_configs_are_named():
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 has NaN"):
        as_latent_rows(x)
    with pytest.raises(ValueError, match="needs n_features"):
        as_latent_rows((np.zeros((2, 2)), np.zeros((2, 2))))
    with pytest.raises(ValueError, match=r"must lie in 0\.\.3"):
        as_latent_rows((np.array([[0, 4]]), np.ones((1, 2))), n_features=4)
    with pytest.raises(ValueError, match="row 1 has 2 indices but 1 values"):
        as_latent_rows(([np.array([0]), np.array([1, 2])], [np.ones(1), np.ones(1)]), n_features=4)
    with pytest.raises(ValueError, match="optimizer"):
        HeadTrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="val_fraction"):
        HeadTrainConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="unknown keys"):
        HeadTrainConfig.from_dict({"learning_rate": 1.0})


# --------------------------------------------------------------------------- CLI, end to end


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    """A train-sae output dir (SAE + backbone reference) on a tiny random Llama."""

    root = tmp_path_factory.mktemp("head-cli")
    bb_dir = tiny_backbone_dir(root / "tiny-llama")
    bb = load_backbone(str(bb_dir), layer=2)
    convs = [pair_conversation(f"q {i}", f"reply {i} " * (1 + i % 3)) for i in range(30)]
    acts = bb.iter_activations(convs, 8, mode="last", progress=False)
    cfg = small_cfg(d_sae=128, mode="last", batch_size=8, n_epochs=5)
    return train_sae(acts, bb.d_model, cfg, progress=False).save(
        root / "sae", backbone=str(bb_dir), layer=2
    )


def test_cli_train_head_end_to_end(sae_dir, tmp_path, capsys):

    data = write_pairs_jsonl(tmp_path / "pairs.jsonl", n=40, seed=3)
    out = tmp_path / "sarm"
    argv = ["train-head", "--model", str(sae_dir), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--baseline", "--val-fraction", "0.25", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    head = report["head"]
    assert head["n_train_pairs"] + head["n_val_pairs"] == 40 and head["n_val_pairs"] == 10
    assert report["baseline"]["n_val_pairs"] == 10
    assert (out / "dense_baseline.safetensors").is_file()
    assert (
        json.loads((out / "baseline" / "head_train.json").read_text())["summary"]
        == (report["baseline"])
    )
    assert json.loads((out / "head_train.json").read_text())["summary"] == head

    # the saved SARM scores with the trained head; its accuracy is the training figure
    model = load_sarm(out)
    assert model.head.hash() == Head.load(out / "head.safetensors").hash()
    groups = load_preferences(data).groups
    convs, row_of = response_conversations(groups)
    rewards = model.pooled_latents(convs).rewards
    acc = pairwise_accuracy(rewards, PairIndex.from_groups(groups, row_of))
    n_tr, n_val = head["n_train_pairs"], head["n_val_pairs"]
    mixed = (head["train_accuracy"] * n_tr + head["val_accuracy"] * n_val) / (n_tr + n_val)
    assert acc == pytest.approx(mixed, abs=1e-6)

    # `sarm eval --baseline` finds the dense baseline and reproduces its training figures
    assert main(["eval", "--model", str(out), "--data", str(data), "--baseline", "--json"]) == 0
    base, b = json.loads(capsys.readouterr().out)["baseline"], report["baseline"]
    mixed_b = (b["train_accuracy"] * n_tr + b["val_accuracy"] * n_val) / (n_tr + n_val)
    assert base["pairwise_accuracy"] == pytest.approx(mixed_b, abs=1e-6)


def test_cli_train_head_on_a_sarm_checkpoint_and_errors(tmp_path, capsys):

    ckpt = make_released_checkpoint(tmp_path / "released", template="chatml")
    data = write_pairs_jsonl(tmp_path / "pairs.jsonl", n=20)
    argv = ["train-head", "--model", str(ckpt), "--data", str(data), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--l1", "1e-3"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "o2"), "--val-fraction", "1.5"]) == 2
    assert "val_fraction must be in [0, 1)" in capsys.readouterr().err
