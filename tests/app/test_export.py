"""sarm.export: head edits, the safetensors + manifest export, complete checkpoints."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from app_env import build_app_env
from safetensors.torch import load

from feature_store import FeatureStore
from sarm import load_sarm
from sarm.constants import HEAD_MANIFEST_FILE, HEAD_WEIGHTS_FILE
from sarm.export import (
    check_output_dir,
    checkpoint_rewards,
    checkpoint_zip,
    edit_manifest,
    head_files,
    model_info,
    read_manifest,
    write_checkpoint,
    write_head,
)
from sarm.head import Head, as_weight


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "app-env"
    root.mkdir(exist_ok=True)
    return build_app_env(root)


@pytest.fixture(scope="module")
def model(env):

    return load_sarm(env.model_dir)


def test_head_edit_normalises_overrides():
    base = np.array([0.5, -1.0, 0.1, 2.0], dtype=np.float32)
    edit = Head(base, 0.25, {1: -1.0, 2: 0.3, 3: np.float64(0.0), 0: 1}, name="v")
    assert edit.overrides == {0: 1.0, 2: float(np.float32(0.3)), 3: 0.0}  # 1 is unchanged
    assert edit.weights.dtype == np.float32
    np.testing.assert_array_equal(edit.weights, [1.0, -1.0, np.float32(0.3), 0.0])
    assert [c[0] for c in edit.changes()] == [3, 0, 2]  # by |delta|
    assert edit.applied().bias == 0.25 and edit.base().hash() != edit.applied().hash()
    np.testing.assert_array_equal(base, np.float32([0.5, -1.0, 0.1, 2.0]))  # base untouched
    assert not edit.weight.flags.writeable
    for bad, match in [
        ({9: 1.0}, "out of range"),
        ({1: float("nan")}, "finite"),
        ({"a": 1.0}, "integers"),
        ({1: "x"}, "number"),
    ]:
        with pytest.raises(ValueError, match=match):
            Head(base, 0.0, bad, name="v")
    assert as_weight(1 / 3) == float(np.float32(1 / 3))


def test_head_files_and_manifest():
    base = np.linspace(-1, 1, 8).astype(np.float32)
    edit = Head(base, 0.5, {3: 0.0, 6: 2.5}, name="ingest")
    info = {"base_model": {"backbone": "bb", "layer": 3}, "sae": {"hash": "abc", "d_sae": 8}}
    manifest = edit_manifest(
        edit,
        info,
        labels={6: "politeness"},
        metrics_before={"pairwise_accuracy": 0.5},
        metrics_after={"pairwise_accuracy": 0.75, "rmbench": {"hard": float("nan")}},
        note="n",
    )
    files = head_files(edit, manifest)
    tensors = load(files[HEAD_WEIGHTS_FILE])
    assert tensors["score.weight"].shape == (1, 8)
    np.testing.assert_array_equal(tensors["score.weight"][0].numpy(), edit.weights)
    assert float(tensors["score.bias"][0]) == 0.5
    assert Head.from_tensors(tensors).hash() == edit.applied().hash()
    doc = json.loads(files[HEAD_MANIFEST_FILE])
    assert doc["parent_head"] == {
        "name": "ingest",
        "hash": Head(base, 0.5).hash(),
        "bias": 0.5,
    }
    assert doc["head"]["hash"] == edit.applied().hash() and doc["base_model"]["backbone"] == "bb"
    assert doc["changes"] == [
        {
            "feature_id": 6,
            "label": "politeness",
            "old_weight": float(base[6]),
            "new_weight": 2.5,
            "delta": 2.5 - float(base[6]),
        },
        {
            "feature_id": 3,
            "label": "",
            "old_weight": float(base[3]),
            "new_weight": 0.0,
            "delta": -float(base[3]),
        },
    ]
    assert doc["metrics_after"] == {"pairwise_accuracy": 0.75, "rmbench": {"hard": None}}
    assert doc["metrics_before"]["pairwise_accuracy"] == 0.5 and doc["note"] == "n"


def test_output_dirs_are_checked(tmp_path):
    assert check_output_dir(str(tmp_path / "new")) == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(str(tmp_path / "empty")).is_dir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    (tmp_path / "file").write_text("x")
    for text, match in [
        ("", "give a directory"),
        (str(tmp_path / "full"), "not empty"),
        (str(tmp_path / "file"), "not a directory"),
        (str(tmp_path / "a" / "b"), "parent directory"),
        ("x\x00y", "NUL"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_output_dir(text)
    edit = Head(np.ones(4, np.float32), 0.0, {1: 0.0}, name="v")
    with pytest.raises(ValueError, match="not empty"):
        write_head(edit, {}, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
    written = write_head(edit, {"format": "x"}, tmp_path / "out")
    assert sorted(p.name for p in written) == [HEAD_WEIGHTS_FILE, HEAD_MANIFEST_FILE]
    np.testing.assert_array_equal(
        Head.load(tmp_path / "out" / HEAD_WEIGHTS_FILE).weight, [1, 0, 1, 1]
    )
    assert read_manifest(tmp_path / "out") == {"format": "x"}


def test_checkpoint_scores_exactly_as_previewed(model, env, tmp_path):

    with FeatureStore.open(env.store_path, read_only=True) as store:
        ex = [store.example(i) for i in (0, 1, 7)]
        weights, bias = store.head_weights()
    top = int(ex[0].features["feature_id"].iloc[0])
    second = int(ex[1].features["feature_id"].iloc[0])
    edit = Head(weights, bias, {top: 0.0, second: 1.75}, name="ingest")
    manifest = edit_manifest(edit, model_info(model))
    target = write_checkpoint(model, edit, manifest, tmp_path / "ckpt")
    assert {p.name for p in target.iterdir()} >= {
        "sarm.json",
        "sae",
        HEAD_WEIGHTS_FILE,
        HEAD_MANIFEST_FILE,
    }
    assert read_manifest(target)["head"]["hash"] == edit.applied().hash()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left
    convs = [e.conversation() for e in ex]
    got = checkpoint_rewards(target, convs)
    # independent reference: the original model's pooled activations under the edited weights
    w = edit.weights.astype(np.float64)
    ref = [
        sum(a * w[f] for f, a in model.score(messages=c).activations.items()) + bias for c in convs
    ]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    stored = [e.reward for e in ex]  # and the edit changed them by exactly delta_w * z
    for e, g, s in zip(ex, got, stored, strict=True):
        feats = dict(zip(e.features["feature_id"], e.features["activation"], strict=True))
        delta = sum((edit.overrides[f] - weights[f]) * feats.get(f, 0.0) for f in edit.overrides)
        assert g == pytest.approx(s + delta, abs=1e-5)
    assert model.head.hash() != edit.applied().hash()  # the loaded model itself was not changed
    with pytest.raises(ValueError, match="not empty"):
        write_checkpoint(model, edit, manifest, target)
    with pytest.raises(ValueError, match="weights"):
        write_checkpoint(model, Head(np.ones(3, np.float32), name="x"), manifest, tmp_path / "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_checkpoint_zip_holds_the_layout(model):
    edit = Head(model.head.weight, 0.0, {0: 0.5}, name="ingest")
    data = checkpoint_zip(model, edit, {"format": "sarm-head-edit"}, name="edited")
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {
        "edited/sarm.json",
        f"edited/{HEAD_WEIGHTS_FILE}",
        f"edited/{HEAD_MANIFEST_FILE}",
    } <= names
    assert any(n.startswith("edited/sae/") for n in names)
    head = zipfile.ZipFile(io.BytesIO(data)).read(f"edited/{HEAD_WEIGHTS_FILE}")
    assert load(head)["score.weight"][0, 0] == torch.tensor(0.5)
