"""Head editor, labels and export through the app (AppTest), checked against the store and model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from app_env import app_groups
from test_app_pages import env, frame_with, go, metric, model, start, store_path  # noqa: F401

from app import state
from feature_store import FeatureStore
from sarm.export import checkpoint_rewards, read_manifest
from sarm.head import Head, as_weight


def current_example(at, store_path):  # noqa: F811

    eid = at.selectbox(key="editor_example").value
    with FeatureStore.open(store_path) as store:
        ex = store.example(eid)
        weights, bias = store.head_weights()
    return eid, ex, weights, bias


def reference_accuracy(rewards_by_id: dict[int, float], store_path) -> float:  # noqa: F811
    """Pairwise accuracy by looping over the original groups (independent of PairIndex)."""

    with FeatureStore.open(store_path) as store:
        frame = store.examples_frame()
    key = {
        (g, r, i): e
        for e, g, r, i in zip(
            frame.example_id, frame.group_id, frame.role, frame.response_index, strict=True
        )
    }
    hits = []
    for g in app_groups():
        if g.kind == "single":
            continue
        for i in range(len(g.chosen)):
            for j in range(len(g.rejected)):
                c, r = key[(g.group_id, "chosen", i)], key[(g.group_id, "rejected", j)]
                hits.append(rewards_by_id[c] > rewards_by_id[r])
    return float(np.mean(hits))


def test_slider_changes_the_reward_by_exactly_delta_w_times_z(store_path):  # noqa: F811
    at = start("editor")
    eid, ex, weights, _ = current_example(at, store_path)
    base = float(metric(at, "Reward (base head)"))
    assert base == pytest.approx(ex.reward, abs=2e-6)
    at.button(key="editor_add_top").click().run()
    fid = int(ex.features["feature_id"].iloc[0])
    z = float(ex.features["activation"].iloc[0])
    slider = at.slider(key=f"editor_w_{fid}")
    assert slider.value == pytest.approx(float(weights[fid]))
    new = 0.8 * float(slider.max)
    slider.set_value(new).run()
    assert not at.exception
    applied = as_weight(new)
    assert at.session_state["shared_overrides"] == {fid: applied}
    expected = ex.reward + (applied - float(weights[fid])) * z
    assert float(metric(at, "Reward (edited)")) == pytest.approx(expected, abs=1e-6)
    assert metric(at, "Changed weights") == "1"
    # the whole store: accuracy against an independent recompute of every reward

    with FeatureStore.open(store_path) as store:
        rewards = {}
        for e in store.examples_frame()["example_id"]:
            feats = store.example(int(e)).features
            w = weights.astype(np.float64).copy()
            w[fid] = applied
            rewards[int(e)] = float((feats["activation"] * w[feats["feature_id"]]).sum())
    shown = float(metric(at, "Pairwise accuracy (edited)").rstrip("%")) / 100
    assert shown == pytest.approx(reference_accuracy(rewards, store_path), abs=5e-5)
    # the edit is visible on the other pages: Explain shows the same edited reward
    go(at, "explain")
    at.selectbox(key="explain_example").set_value(eid).run()
    assert float(metric(at, "Reward")) == pytest.approx(expected, abs=1e-6)
    assert "1 edit" in " ".join(m.value for m in at.sidebar.markdown)


def test_zero_reset_and_remove(store_path):  # noqa: F811
    at = start("editor")
    _, ex, weights, _ = current_example(at, store_path)
    at.button(key="editor_add_top").click().run()
    fid = int(ex.features["feature_id"].iloc[1])
    z = float(ex.features["activation"].iloc[1])
    at.button(key=f"editor_zero_{fid}").click().run()
    assert at.slider(key=f"editor_w_{fid}").value == 0.0
    assert float(metric(at, "Reward (edited)")) == pytest.approx(
        ex.reward - float(weights[fid]) * z, abs=1e-6
    )
    at.button(key=f"editor_reset_{fid}").click().run()
    assert at.session_state["shared_overrides"] == {}
    assert float(metric(at, "Reward (edited)")) == pytest.approx(ex.reward, abs=1e-6)
    at.button(key=f"editor_zero_{fid}").click().run()
    at.button(key=f"editor_remove_{fid}").click().run()
    assert at.session_state["shared_overrides"] == {} and not at.exception
    with pytest.raises(KeyError):
        at.slider(key=f"editor_w_{fid}")


def test_flipped_pairs_open_in_compare(store_path):  # noqa: F811
    at = start("editor")
    _, ex, _, _ = current_example(at, store_path)
    at.button(key="editor_add_top").click().run()
    for fid in ex.features["feature_id"].head(5):  # a big change flips some pairs
        at.button(key=f"editor_zero_{int(fid)}").click().run()
    assert int(metric(at, "Flipped pairs")) > 0
    pick = at.selectbox(key="editor_flipped_pick")
    label = pick.format_func(pick.value)
    at.button(key="editor_flipped_open").click().run()
    assert [t.value for t in at.title] == ["Compare a pair"] and not at.exception
    shown = at.selectbox(key="compare_pair").format_func(at.selectbox(key="compare_pair").value)
    assert label.split(": ")[1].split(" (")[0] in shown


def test_save_head_version_and_reload(store_path):  # noqa: F811

    at = start("editor")
    _, ex, _weights, bias = current_example(at, store_path)
    at.button(key="editor_add_top").click().run()
    fid = int(ex.features["feature_id"].iloc[0])
    at.button(key=f"editor_zero_{fid}").click().run()
    edited = float(metric(at, "Reward (edited)"))
    at.text_input(key="editor_save_name").input("no-top-feature")
    at.text_input(key="editor_save_note").input("zeroed the top feature")
    at.button(key="editor_save").click().run()
    assert not at.exception and not at.error
    assert any("Saved head version" in s.value for s in at.success)
    assert at.session_state["shared_head_base"] == "no-top-feature"
    assert at.session_state["shared_overrides"] == {}
    assert float(metric(at, "Reward (base head)")) == pytest.approx(edited, abs=1e-6)
    with FeatureStore.open(store_path) as store:
        version = store.load_head("no-top-feature")
        diff = store.diff_heads("ingest", "no-top-feature")
    assert version.parent == "ingest" and version.note == "zeroed the top feature"
    assert (
        diff["feature_id"].tolist() == [fid]
        and version.weights[fid] == 0.0
        and version.bias == bias
    )
    assert 0 <= version.metrics["pairwise_accuracy"] <= 1
    # names are immutable: saving again under the same name is refused with a message
    at.button(key="editor_add_top").click().run()
    at.button(key=f"editor_zero_{int(ex.features['feature_id'].iloc[1])}").click().run()
    at.text_input(key="editor_save_name").input("no-top-feature")
    at.button(key="editor_save").click().run()
    assert any("already exists" in e.value for e in at.error) and not at.exception
    # and the old version can be chosen as the base again
    at.selectbox(key="editor_base").set_value("ingest").run()
    assert at.session_state["shared_overrides"] == {}
    assert float(metric(at, "Reward (base head)")) == pytest.approx(ex.reward, abs=2e-6)


def test_saved_label_shows_everywhere_and_survives_a_restart(store_path):  # noqa: F811

    at = start("features")
    fid = int(at.number_input(key="features_fid").value)
    at.text_input(key="features_label_text").input("Polite refusal <i>")
    at.text_area(key="features_label_desc").input("declines, politely")
    at.text_input(key="features_label_author").input("tester")
    at.button(key="features_label_save").click().run()
    assert not at.exception and not at.error
    assert at.header[0].value == f"Feature {fid}: Polite refusal \\<i\\>"  # escaped
    history = frame_with(at, "created_at")
    assert (
        history["label"].tolist()[0] == "Polite refusal <i>"
        and history["author"].tolist()[0] == "tester"
    )
    with FeatureStore.open(store_path) as store:
        assert store.labels_for([fid]) == {fid: "Polite refusal <i>"}
    # everywhere: the feature table, and the explanation tables on other pages
    assert "Polite refusal <i>" in at.dataframe(key="features_table").value["label"].tolist()
    go(at, "editor")
    at.number_input(key="editor_add_id").set_value(fid)
    at.button(key="editor_add").click().run()
    assert any("Polite refusal" in m.value for m in at.markdown)
    at.text_input(key="editor_label_q").input("POLITE").run()
    assert at.multiselect(key="editor_label_pick").options == [f"f{fid} \u00b7 Polite refusal <i>"]
    # restart: close the store, read it from another process
    state.open_store.clear()
    code = (
        "import sys; from feature_store import FeatureStore;"
        "s = FeatureStore.open(sys.argv[1], read_only=True);"
        "print(s.label_history(int(sys.argv[2]))[['label','author']].to_json(orient='records'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store_path), str(fid)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)[0] == {"label": "Polite refusal <i>", "author": "tester"}
    at2 = start("features")
    at2.number_input(key="features_fid").set_value(fid).run()
    assert at2.header[0].value == f"Feature {fid}: Polite refusal \\<i\\>"


def test_bad_label_is_refused_with_a_message(store_path):  # noqa: F811
    at = start("features")
    fid = int(at.number_input(key="features_fid").value)
    at.text_input(key="features_label_text").input("ok label")
    at.text_area(key="features_label_desc").input("x" * 10_001)
    at.button(key="features_label_save").click().run()
    assert not at.exception
    assert any("The label was not saved" in e.value and "10000" in e.value for e in at.error)

    with FeatureStore.open(store_path) as store:
        assert store.labels_for([fid]) == {fid: "Strongest feature"}  # unchanged


def test_export_page_writes_a_checkpoint_that_reproduces_the_preview(store_path, tmp_path):  # noqa: F811

    at = start("editor")
    eid, ex, weights, bias = current_example(at, store_path)
    at.button(key="editor_add_top").click().run()
    fid = int(ex.features["feature_id"].iloc[0])
    slider = at.slider(key=f"editor_w_{fid}")
    slider.set_value(0.5 * float(slider.min)).run()
    previewed = float(metric(at, "Reward (edited)"))
    applied = at.session_state["shared_overrides"][fid]
    go(at, "export")
    assert frame_with(at, "new_weight")["feature_id"].tolist() == [fid]
    at.text_input(key="export_head_dir").input(str(tmp_path / "head"))
    at.button(key="export_write_head").click().run()
    assert any("Wrote" in s.value for s in at.success), [e.value for e in at.error]
    head = Head.load(tmp_path / "head" / "head.safetensors")
    assert float(head.weight[fid]) == applied and head.bias == bias
    manifest = read_manifest(tmp_path / "head")
    assert manifest["changes"][0]["feature_id"] == fid and manifest["head"]["hash"] == head.hash()
    assert manifest["metrics_before"]["n_pairs"] == manifest["metrics_after"]["n_pairs"] == 24
    at.text_input(key="export_ckpt_dir").input(str(tmp_path / "ckpt"))
    at.button(key="export_write_ckpt").click().run()
    assert any("Wrote the checkpoint" in s.value for s in at.success)
    got = checkpoint_rewards(tmp_path / "ckpt", [ex.conversation()])
    assert got[0] == pytest.approx(previewed, abs=1e-5)
    assert got[0] == pytest.approx(
        ex.reward + (applied - float(weights[fid])) * float(ex.features["activation"].iloc[0]),
        abs=1e-5,
    )
    at.button(key="export_verify").click().run()
    assert not at.exception
    assert any("reproduces the previewed rewards" in s.value for s in at.success)
    # writing again into the same directory is refused; nothing is overwritten
    at.button(key="export_write_ckpt").click().run()
    assert any("not empty" in e.value for e in at.error)
    del eid
