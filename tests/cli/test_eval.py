"""``sarm eval`` and ``evaluate_model`` against rewards computed one by one."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_released_checkpoint

from sarm import load_sarm
from sarm.data import save_jsonl
from sarm.head import Head
from sarm.saes import standardize
from sarm.scoring import evaluate_model, score_groups
from sarm.types import PreferenceGroup
from workflows.cli import main


def groups():
    user = ({"role": "user", "content": "Name a colour."},)
    return [
        PreferenceGroup("a", user, ("Blue.",), ("Car.",), subset="easy"),
        PreferenceGroup(
            "b",
            user,
            ("Red is a colour.",),
            ("No.", "Maybe.", "Soup."),
            subset="hard",
            kind="best_of_n",
        ),
        PreferenceGroup(
            "c", ({"role": "user", "content": "Say hi."},), ("Hi!",), ("Bye.",), subset="hard"
        ),
    ]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_released_checkpoint(tmp_path_factory.mktemp("e") / "m", seed=6)


def test_evaluate_model_matches_single_scores(ckpt):
    model = load_sarm(ckpt)
    gs = groups()
    scored = score_groups(model, gs, batch_size=2, progress=False)
    one_by_one = {}
    for g in gs:
        for role, i, text in g.responses():
            one_by_one[(g.group_id, role, i)] = model.score(messages=g.conversation(text)).reward
    for key, reward in zip(scored.keys, scored.rewards, strict=True):
        assert reward == pytest.approx(one_by_one[key], abs=1e-5)
    pairs = [("a", 0), ("b", 0), ("b", 1), ("b", 2), ("c", 0)]
    correct = [one_by_one[(g, "chosen", 0)] > one_by_one[(g, "rejected", j)] for g, j in pairs]
    report = evaluate_model(model, gs, progress=False)[0].to_dict()
    assert report["n_pairs"] == 5
    assert report["pairwise_accuracy"] == pytest.approx(sum(correct) / 5)
    assert report["per_subset"]["easy"]["accuracy"] == pytest.approx(float(correct[0]))
    assert report["best_of_n_accuracy"] == pytest.approx(float(all(correct[1:4])))


def test_eval_cli_json(ckpt, tmp_path, capsys):
    data = save_jsonl(groups(), tmp_path / "prefs.jsonl")
    assert main(["eval", "--model", str(ckpt), "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pairs"] == 5 and set(out["per_subset"]) == {"easy", "hard"}
    assert 0.0 <= out["pairwise_accuracy"] <= 1.0


def test_eval_cli_bad_data(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "y"}\n')
    assert main(["eval", "--model", str(ckpt), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "row 1" in err


def test_dense_baseline_from_the_same_pass(ckpt, tmp_path, capsys):

    model = load_sarm(ckpt)
    torch.manual_seed(1)
    base = Head(torch.randn(model.backbone.d_model))
    base.save(tmp_path / "b.safetensors")
    gs = groups()
    _, report = evaluate_model(model, gs, progress=False, baseline=base)
    rewards = {}
    for g in gs:
        for role, i, text in g.responses():
            batch = model.backbone.encode([g.conversation(text)])
            u = standardize(model.backbone.hidden_states(batch)[0, -1])
            rewards[(g.group_id, role, i)] = float(
                u.double() @ torch.tensor(base.weight, dtype=torch.float64)
            )
    pairs = [("a", 0), ("b", 0), ("b", 1), ("b", 2), ("c", 0)]
    correct = [rewards[(g, "chosen", 0)] > rewards[(g, "rejected", j)] for g, j in pairs]
    assert report.pairwise_accuracy == pytest.approx(sum(correct) / 5)
    data = save_jsonl(gs, tmp_path / "prefs.jsonl")
    args = ["eval", "--model", str(ckpt), "--data", str(data), "--json"]
    assert main([*args, "--baseline", str(tmp_path / "b.safetensors")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["baseline"]["pairwise_accuracy"] == pytest.approx(sum(correct) / 5)
    assert main([*args, "--baseline"]) == 2
    assert "dense_baseline.safetensors" in capsys.readouterr().err
