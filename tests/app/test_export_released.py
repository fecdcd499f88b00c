"""Export in the layout the user came with: a released (Llama-SARM) checkpoint in which
only ``score.weight`` differs, shards without the head hard-linked, and the copy reloading
through ``load_sarm`` with the previewed rewards."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import torch
from app_env import AppEnv, app_groups, build_app_env, copy_store
from helpers import make_released_checkpoint
from safetensors.torch import load_file, save_file
from test_app_editor import current_example
from test_app_pages import go, metric, start

import sarm.export
from app import state
from feature_store import FeatureStore, ingest
from sarm import load_sarm
from sarm.constants import HEAD_MANIFEST_FILE
from sarm.export import (
    SHARD_INDEX_FILE,
    edit_manifest,
    model_info,
    read_safetensors_header,
    released_source,
    write_checkpoint,
    write_released,
)
from sarm.head import Head

CONVERSATIONS = [
    [{"role": "user", "content": "Tell me about tea."}, {"role": "assistant", "content": c}]
    for c in ("Tea is brewed leaves.", "No.", "Tea is made from crushed rocks, boiled.")
]


def stored_tensors(path) -> dict[str, tuple[str, list[int], bytes]]:
    """``{name: (dtype, shape, raw bytes)}`` of every tensor in one safetensors file."""
    start, header = read_safetensors_header(path)
    blob = path.read_bytes()
    return {
        k: (
            v["dtype"],
            v["shape"],
            blob[start + v["data_offsets"][0] : start + v["data_offsets"][1]],
        )
        for k, v in header.items()
        if k != "__metadata__"
    }


def all_tensors(directory) -> dict[str, tuple[str, list[int], bytes]]:
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out |= stored_tensors(f)
    return out


def an_edit(model, weights=(2.5, 0.0, -1.0 / 3.0)) -> Head:
    """New weights for the features most active on the conversations (so rewards move)."""
    latents = model.pooled_latents(CONVERSATIONS).latents
    mass = np.bincount(latents.indices, np.abs(latents.values), minlength=model.d_sae)
    features = np.argsort(-mass)[: len(weights)].tolist()
    return model.head.applied("ingest").edit(dict(zip(features, weights, strict=True)))


def preview(model, edit: Head) -> np.ndarray:
    """The edit's rewards as the dashboard previews them: base latents, edited head."""
    return edit.rewards(model.pooled_latents(CONVERSATIONS).latents)


def manifest(model, edit):
    return edit_manifest(edit, model_info(model), note="released export")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    path = make_released_checkpoint(tmp_path_factory.mktemp("rel") / "Llama-SARM-tiny", shards=3)
    return path, load_sarm(path)


def test_only_score_weight_differs_and_the_copy_scores_as_previewed(sharded, tmp_path):
    source, model = sharded
    assert released_source(model) == source
    edit = an_edit(model)
    doc = manifest(model, edit)
    out = write_released(model, edit, doc, tmp_path / "edited")
    assert out.path == (tmp_path / "edited").resolve()
    before, after = all_tensors(source), all_tensors(out.path)
    assert sorted(before) == sorted(after)
    changed = [k for k in before if before[k] != after[k]]
    assert changed == ["score.weight"]
    dtype, shape, raw = after["score.weight"]
    assert (dtype, shape) == ("F32", [1, model.d_sae]) and not out.widened
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32), edit.weights)
    # the shards without the head are hard links; the head's shard is a new file
    head_shard = out.rewritten[0]
    assert len(out.linked) == 2 and head_shard not in out.linked
    for name in out.linked:
        assert os.path.samefile(source / name, out.path / name)
    assert not os.path.samefile(source / head_shard, out.path / head_shard)
    old, new = (source / head_shard).read_bytes(), (out.path / head_shard).read_bytes()
    assert len(old) == len(new)  # same header, only the head's bytes differ
    assert sum(a != b for a, b in zip(old, new, strict=True)) <= 4 * 3
    # config, tokenizer files and the index are copied byte for byte
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", SHARD_INDEX_FILE):
        assert (out.path / name).read_bytes() == (source / name).read_bytes(), name
        assert name in out.copied
    assert json.loads((out.path / HEAD_MANIFEST_FILE).read_text()) == doc
    assert not list(tmp_path.glob(".*.tmp"))
    # the copy is a released checkpoint again, and scores exactly as previewed
    copy = load_sarm(out.path)
    assert copy.source["layout"] == "released" and released_source(copy) == out.path
    np.testing.assert_array_equal(copy.head.weights, edit.weights)
    got = np.asarray([s.reward for s in copy.score_batch(CONVERSATIONS)])
    np.testing.assert_allclose(got, preview(model, edit), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, [s.reward for s in model.score_batch(CONVERSATIONS)])


def test_links_fall_back_to_byte_copies(tmp_path, monkeypatch):
    source = make_released_checkpoint(tmp_path / "one", seed=4, shards=2)
    model = load_sarm(source)
    edit = an_edit(model, (1.0,))

    def no_links(src, dst, *a, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(sarm.export.os, "link", no_links)
    out = write_released(model, edit, manifest(model, edit), tmp_path / "copy")
    assert not out.linked and len(out.rewritten) == 1
    other = next(f.name for f in source.glob("*.safetensors") if f.name not in out.rewritten)
    assert other in out.copied and not os.path.samefile(source / other, out.path / other)
    assert (out.path / other).read_bytes() == (source / other).read_bytes()
    before, after = all_tensors(source), all_tensors(out.path)
    assert [k for k in before if before[k] != after[k]] == ["score.weight"]


def bf16_head(source):
    """Store the checkpoint's score.weight in bfloat16 (as large released checkpoints are)."""
    f = next(f for f in source.glob("*.safetensors") if "score.weight" in load_file(f))
    tensors = load_file(f)
    tensors["score.weight"] = tensors["score.weight"].to(torch.bfloat16)
    save_file(tensors, f)


def test_a_bf16_head_keeps_its_dtype_when_it_can_and_widens_when_it_must(tmp_path):
    source = make_released_checkpoint(tmp_path / "bf16", seed=5)
    bf16_head(source)
    model = load_sarm(source)
    exact = an_edit(model, (0.5, -2.0))  # both representable in bf16
    out = write_released(model, exact, manifest(model, exact), tmp_path / "exact")
    assert out.head_dtype == "BF16" and not out.widened
    before, after = all_tensors(source), all_tensors(out.path)
    assert [k for k in before if before[k] != after[k]] == ["score.weight"]
    assert (source / "model.safetensors").stat().st_size == (
        out.path / "model.safetensors"
    ).stat().st_size
    np.testing.assert_array_equal(load_sarm(out.path).head.weights, exact.weights)

    fine = an_edit(model, (1.0 / 3.0,))  # not a bf16 number: written as float32
    out = write_released(model, fine, manifest(model, fine), tmp_path / "fine")
    assert out.head_dtype == "F32" and out.widened
    before, after = all_tensors(source), all_tensors(out.path)
    assert [k for k in before if before[k] != after[k]] == ["score.weight"]
    copy = load_sarm(out.path)
    np.testing.assert_array_equal(copy.head.weights, fine.weights)
    got = np.asarray([s.reward for s in copy.score_batch(CONVERSATIONS)])
    np.testing.assert_allclose(got, preview(model, fine), rtol=1e-5, atol=1e-5)


def test_the_index_size_follows_a_widened_head(tmp_path):
    source = make_released_checkpoint(tmp_path / "idx", seed=6, shards=2)
    index = json.loads((source / SHARD_INDEX_FILE).read_text())
    index["metadata"]["total_size"] = sum(
        sum(len(v[2]) for v in stored_tensors(f).values()) for f in source.glob("*.safetensors")
    )
    (source / SHARD_INDEX_FILE).write_text(json.dumps(index))
    bf16_head(source)
    index["metadata"]["total_size"] -= 2 * 64  # the head shrank to 2 bytes a weight
    (source / SHARD_INDEX_FILE).write_text(json.dumps(index))
    model = load_sarm(source)
    out = write_released(model, an_edit(model, (0.1,)), {}, tmp_path / "out")
    assert out.widened
    written = json.loads((out.path / SHARD_INDEX_FILE).read_text())
    assert written["metadata"]["total_size"] == index["metadata"]["total_size"] + 2 * 64
    assert written["weight_map"] == index["weight_map"]


def test_refusals(sharded, tmp_path, env_model_dir):
    _, model = sharded
    ours = load_sarm(env_model_dir)
    assert released_source(ours) is None
    with pytest.raises(ValueError, match="not loaded from a released"):
        write_released(ours, ours.head.applied("ingest"), {}, tmp_path / "a")
    biased = Head(model.head.weights, 0.5, name="ingest")
    with pytest.raises(ValueError, match="has a bias"):
        write_released(model, biased, {}, tmp_path / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="not empty"):
        write_released(model, an_edit(model), {}, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # a model of our layout still exports its own way
    assert write_checkpoint(ours, ours.head.applied("ingest"), {}, tmp_path / "c").is_dir()


@pytest.fixture(scope="module")
def env_model_dir(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "app-env"
    root.mkdir(exist_ok=True)
    return build_app_env(root).model_dir


# --------------------------------------------------------------------------- the Export page


@pytest.fixture(scope="module")
def released_env(tmp_path_factory):
    """A released-layout checkpoint and a store built from it (the dashboard's SARM_MODEL)."""
    root = tmp_path_factory.mktemp("released-app")
    path = make_released_checkpoint(root / "Llama-SARM-tiny", seed=3, shards=2)
    store_path = root / "store.duckdb"
    with FeatureStore.open(store_path) as store:
        ingest(store, load_sarm(path), app_groups(6), batch_size=8, top_n=5, progress=False)
    return path, store_path


@pytest.fixture
def released_app(released_env, tmp_path, monkeypatch):
    path, store = released_env
    copy = copy_store(AppEnv(path, store), tmp_path / "store.duckdb")
    monkeypatch.setenv("SARM_MODEL", str(path))
    monkeypatch.setenv("SARM_STORE", str(copy))
    yield path, copy
    state.open_store.clear()


def test_the_export_page_writes_the_released_copy(released_app, tmp_path):
    source, store_path = released_app
    at = start("editor")
    _, ex, weights, _ = current_example(at, store_path)
    at.button(key="editor_add_top").click().run()
    fid = int(ex.features["feature_id"].iloc[0])
    slider = at.slider(key=f"editor_w_{fid}")
    slider.set_value(0.5 * float(slider.min)).run()
    previewed = float(metric(at, "Reward (edited)"))
    applied = at.session_state["shared_overrides"][fid]
    go(at, "export")
    headers = [h.value for h in at.subheader]
    assert any("released checkpoint you loaded" in h for h in headers), headers
    assert any(h.startswith("(c) A complete checkpoint in our layout") for h in headers)
    at.text_input(key="export_released_dir").input(str(tmp_path / "copy"))
    at.button(key="export_write_released").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wrote = [s.value for s in at.success if s.value.startswith("Wrote the edited released")]
    assert len(wrote) == 1 and "1 shard(s) hard-linked" in wrote[0], wrote
    copy = tmp_path / "copy"
    before, after = all_tensors(source), all_tensors(copy)
    assert [k for k in before if before[k] != after[k]] == ["score.weight"]
    written = json.loads((copy / HEAD_MANIFEST_FILE).read_text())
    assert [c["feature_id"] for c in written["changes"]] == [fid]
    model = load_sarm(copy)
    assert float(model.head.weights[fid]) == applied
    got = model.score_batch([ex.conversation()])[0].reward
    assert got == pytest.approx(previewed, abs=1e-5)
    assert got == pytest.approx(
        ex.reward + (applied - float(weights[fid])) * float(ex.features["activation"].iloc[0]),
        abs=1e-5,
    )
    at.button(key="export_verify").click().run()
    assert any("reproduces the previewed rewards" in s.value for s in at.success)
    at.button(key="export_write_released").click().run()  # never overwrites
    assert any("not empty" in e.value for e in at.error)


def test_a_model_of_our_layout_is_not_offered_the_released_copy(
    env_model_dir, tmp_path, monkeypatch
):
    store = env_model_dir.parent / "store.duckdb"
    monkeypatch.setenv("SARM_MODEL", str(env_model_dir))
    monkeypatch.setenv(
        "SARM_STORE", str(copy_store(AppEnv(env_model_dir, store), tmp_path / "s.duckdb"))
    )
    try:
        at = start("export")
        assert not [b for b in at.button if b.key == "export_write_released"]
        assert [h.value for h in at.subheader if h.value.startswith("(b)")] == [
            "(b) A complete checkpoint in our layout"
        ]
    finally:
        state.open_store.clear()
