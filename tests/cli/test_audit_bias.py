"""``sarm audit-bias`` end to end on a tiny real SARM: JSON, exactness, saving and exporting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from app_env import build_app_env, copy_store
from helpers import make_released_checkpoint

from feature_store import FeatureStore
from sarm import load_sarm
from sarm.bias.counterfactual import delta_rewards, feature_deltas, load_samples
from sarm.bias.operators import OPERATORS
from sarm.bias.properties import PROPERTIES
from sarm.head import Head
from workflows.cli import main

TOPICS = ["the weather", "a python bug", "cats", "tax rules", "a recipe", "chess", "tea", "maps"]


def _row(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    return {
        "id": f"g{i}",
        "prompt": f"Tell me about {topic} ({i}).",
        "chosen": f"Here is a careful answer about {topic}. It has two sentences.",
        "rejected": f"{topic.capitalize()} is a topic. I do not know much about it.",
        "category": "safety" if i % 4 == 0 else "helpfulness",
        "source": "src-a" if i % 2 else "src-b",
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bias")
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(16)))
    dev = root / "dev.jsonl"
    dev.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(16, 28)))
    return make_released_checkpoint(root / "m", seed=5), data, dev, root


def _audit(setup, *extra) -> list[str]:
    ckpt, data, dev, root = setup
    args = ["audit-bias", "--model", str(ckpt), "--data", str(data), "--dev-data", str(dev)]
    args += ["--pairs-per-operator", "4", "--quiet", "--json", "--samples", str(root / "s.npz")]
    return args + list(extra)


def test_report_has_every_property_and_operator(setup, capsys):
    assert main(_audit(setup)) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["properties"]) == set(PROPERTIES)
    assert set(out["operators"]) == set(OPERATORS)
    for row in out["properties"].values():
        assert {"reward_corr", "within_prompt_effect", "top_features"} <= set(row)
        assert "counterfactual_delta_median" in row
        for f in row["top_features"]:
            assert set(f) >= {"id", "explanation", "share"}
    md = out["properties"]["markdown"]
    assert md["operator"] == "markdown"
    assert md["counterfactual_delta_median"] == out["operators"]["markdown"]["audit"]["median"]
    assert out["operators"]["pad"]["audit"]["n"] == 4
    refused = load_samples(setup[3] / "s.npz")[0]["audit"]["refusal"]
    assert len(refused.pairs) == 4 and all(p % 4 for p in refused.pairs)  # no 'safety' prompt
    assert out["fixes"], "a random head pays for at least one rewrite"
    for fix in out["fixes"].values():
        for when in ("before", "after"):
            assert {"bias", "pairwise_accuracy", "per_source"} <= set(fix[when])
            assert 0 <= fix[when]["pairwise_accuracy"]["accuracy"] <= 1


def test_every_delta_r_decomposes_exactly(setup, capsys):
    ckpt, data, _dev, root = setup
    assert main(_audit(setup)) == 0  # reuses the samples file
    report = json.loads(capsys.readouterr().out)
    head = load_sarm(ckpt).head
    splits, _ = load_samples(root / "s.npz")
    for name, sample in splits["audit"].items():
        delta = delta_rewards(head, sample)
        np.testing.assert_allclose(feature_deltas(head, sample).sum(axis=1), delta, atol=1e-5)
        assert report["operators"][name]["audit"]["median"] == pytest.approx(np.median(delta))
    # the rewrites were really scored: the model's own score of one rewrite
    model = load_sarm(ckpt)
    sample = splits["audit"]["confidence"]
    row = json.loads(data.read_text().splitlines()[int(sample.pairs[0])])
    text = sample.texts[0]
    assert text == row["rejected"] + " I am confident this is correct."
    reward = head.rewards(sample.rewritten)[0]
    assert reward == pytest.approx(model.score(row["prompt"], text).reward, abs=1e-4)


def test_fix_is_exported_and_saved(setup, tmp_path, capsys):
    assert main(_audit(setup)) == 0
    fixes = json.loads(capsys.readouterr().out)["fixes"]
    op = next(iter(fixes))
    env = build_app_env(tmp_path / "env")
    store = copy_store(env, tmp_path / "store.duckdb")
    out_dir = tmp_path / "head"
    args = _audit(setup, "--fix", op, "--export-fix", str(out_dir))
    assert main([*args, "--save-fix", "no-bias", "--store", str(store)]) == 0
    fix = json.loads(capsys.readouterr().out)["fixes"][op]
    exported = Head.load(out_dir)
    for f in fix["features"]:
        assert exported.weights[f] == 0.0
    with FeatureStore.open_for_reading(store) as s:
        saved = s.load_head("no-bias")
    np.testing.assert_array_equal(np.asarray(saved.weights, np.float32), exported.weights)


def test_list_and_bad_arguments(capsys):
    assert main(["audit-bias", "--list-operators", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["markdown"]["example"]["after"].startswith("## Answer")
    assert main(["audit-bias", "--model", "x", "--data", "y", "--operators", "nope"]) == 2
    assert "unknown operators" in capsys.readouterr().err
    assert main(["audit-bias", "--model", "x", "--data", "y", "--save-fix", "n"]) == 2


def test_markdown_tables_carry_the_reports_figures(setup, capsys):
    assert main(_audit(setup)) == 0
    report = json.loads(capsys.readouterr().out)
    args = [a for a in _audit(setup) if a != "--json"]
    assert main([*args, "--markdown"]) == 0
    text = capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    for name in PROPERTIES:
        assert name in rows
    pad = report["operators"]["pad"]["audit"]
    assert f"{pad['median']:+.3f}" in rows["length_tokens"]
    assert f"(n={pad['n']})" in rows["length_tokens"]


def test_fix_destinations_are_checked_before_the_audit(setup, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    assert main([*_audit(setup), "--fix", "pad", "--export-fix", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and (full / "x").read_text() == "keep me"
    env = build_app_env(tmp_path / "env")
    store = copy_store(env, tmp_path / "store.duckdb")
    with FeatureStore.open(store) as s:
        s.save_head("taken", np.zeros(64, np.float32))
    args = [*_audit(setup), "--fix", "pad", "--save-fix", "taken", "--store", str(store)]
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_features_are_named_by_label_else_explanation(tmp_path):
    from app_env import build_app_env

    from feature_store import FeatureStore
    from feature_store.explanations import run_stats_explainer
    from workflows.bias_audit import feature_titles

    env = build_app_env(tmp_path / "env")
    with FeatureStore.open(env.store_path) as store:
        run_stats_explainer(store)
        labelled = int(store.features(limit=1)["feature_id"][0])
        explained = store.explanations()
        d_sae = int(store.d_sae)
    other = explained[explained["feature"] != labelled].iloc[0]
    names = feature_titles(str(env.store_path), "some-model", d_sae)
    assert names[labelled] == "Strongest feature"  # the label wins
    assert names[int(other["feature"])].startswith(other["text"])
    assert feature_titles(None, "some-model", d_sae) == {}
