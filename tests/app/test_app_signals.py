"""What the pages signal: misranked marks, n/a reasons, anchored sliders, texts beside ids."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from test_app_links import open_link, pairs
from test_app_pages import env, frame_with, metric, start, store_path  # noqa: F401

from app import core, state, text
from feature_store import FeatureStore, ingest
from sarm import load_sarm
from sarm.types import PreferenceGroup

APP = Path(__file__).resolve().parents[2] / "app"


def margin_metric(at):
    return next(m for m in at.metric if m.label == "Margin")


def test_a_misranked_pair_is_marked_red_and_down(store_path):  # noqa: F811
    table = pairs(store_path)
    for correct in (False, True):
        row = table[table["correct"] == correct].iloc[0]
        at = open_link("compare", pair=core.pair_param(row["chosen_id"], row["rejected_id"]))
        assert not margin_metric(at).proto.delta  # no metric arrow (it would point up)
        marks = [m.value for m in at.markdown if "ranked" in m.value]
        assert marks == [text.margin_badge(row["margin"])]
        if correct:
            assert marks[0].startswith(":green[:material/arrow_upward:")
        else:
            assert marks[0].startswith(":red[:material/arrow_downward: misranked")


def test_best_of_n_na_says_why(env, store_path, monkeypatch, tmp_path):  # noqa: F811
    at = start("audit")  # the test store has a best-of-N group
    assert metric(at, "Best-of-N accuracy") != "n/a"
    assert not any("Best-of-N accuracy n/a" in c.value for c in at.caption)
    p = ({"role": "user", "content": "Pick one."},)
    groups = [PreferenceGroup(f"p{i}", p, (f"Yes {i}.",), (f"No {i}.",)) for i in range(3)]
    path = tmp_path / "pairs.duckdb"
    with FeatureStore.open(path) as store:
        ingest(store, load_sarm(env.model_dir), groups, top_n=2, progress=False)
    monkeypatch.setenv("SARM_STORE", str(path))
    try:
        at = start("audit")
        assert metric(at, "Best-of-N accuracy") == "n/a"
        assert any(c.value == text.BEST_OF_N_NA for c in at.caption)
        assert "no best-of-N groups in this store" in text.BEST_OF_N_NA
    finally:
        state.open_store.clear()


def test_shift_accuracy_na_says_why(store_path):  # noqa: F811
    at = open_link("shift", target="role:chosen", complement="role:rejected")
    assert metric(at, "Target accuracy before") == "n/a"
    assert metric(at, "Complement accuracy before") == "n/a"
    assert any(c.value == text.shift_accuracy_na(["target", "complement"]) for c in at.caption)
    assert "no (chosen, rejected) pair has both" in text.shift_accuracy_na(["target"])
    assert text.shift_accuracy_na([]) == ""
    fine = open_link("shift", target="subset:chat", complement="rest")
    assert not any("accuracy n/a" in c.value for c in fine.caption)


def test_editor_slider_is_anchored_at_the_base_weight(store_path):  # noqa: F811
    at = start("editor")
    eid = at.selectbox(key="editor_example").value
    with FeatureStore.open(store_path) as store:
        ex = store.example(eid)
        weights, _ = store.head_weights()
    at.button(key="editor_add_top").click().run()
    fid = int(ex.features["feature_id"].iloc[0])
    slider = at.slider(key=f"editor_w_{fid}")
    base = float(weights[fid])
    lo, step = float(slider.min), float(slider.step)
    k = (base - lo) / step
    assert k == pytest.approx(round(k), abs=1e-6)  # one step from the base: base +/- step
    assert slider.value == pytest.approx(base)
    assert any(c.value == text.slider_caption(base, step) for c in at.caption)
    assert f"base {base:+.4f}" in text.slider_caption(base, step)


def test_pair_tables_show_the_texts_beside_the_ids(store_path):  # noqa: F811
    at = start("audit")
    wrong = frame_with(at, "reward_rejected")
    columns = list(wrong.columns)
    at_ids = columns.index("rejected_id")
    assert columns[at_ids + 1 : at_ids + 4] == ["prompt", "chosen_text", "rejected_text"]
    with FeatureStore.open(store_path) as store:
        texts = store.example_texts(wrong["chosen_id"].tolist() + wrong["rejected_id"].tolist())
    by_id = texts.set_index("example_id")
    first = wrong.iloc[0]
    assert first["prompt"] == core.short(by_id.loc[first["chosen_id"], "prompt"], 60)
    assert first["chosen_text"] == core.short(by_id.loc[first["chosen_id"], "response"], 60)
    assert first["rejected_text"] == core.short(by_id.loc[first["rejected_id"], "response"], 60)
    # the Head editor's flipped pairs too
    at = start("editor")
    at.button(key="editor_add_top").click().run()
    fid = at.session_state["shared_editor_features"][0]
    slider = at.slider(key=f"editor_w_{fid}")
    slider.set_value(float(slider.max) if slider.value < 0 else float(slider.min)).run()
    flipped = frame_with(at, "margin_before")
    assert len(flipped) and {"prompt", "chosen_text", "rejected_text"} <= set(flipped.columns)


def test_overview_lists_the_shift_and_shows_a_readable_panel(store_path):  # noqa: F811
    at = start()
    assert "shift" in [link.proto.page for link in at.get("page_link")]
    assert not at.json
    panel = at.table[0].value
    assert panel.loc["model", "value"] == at.session_state[state.SOURCES].model
    assert panel.loc["head (base version)", "value"] == "ingest"
    assert panel.loc["head: changed weights", "value"] == "0"


def test_nothing_in_app_loads_an_external_url():
    for path in APP.rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"https?://|//cdn\.|googleapis|gstatic", source), path
    tree = ast.parse((APP / "main.py").read_text())
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "set_page_config"
    )
    icon = next(k.value.value for k in call.keywords if k.arg == "page_icon")
    # an emoji is drawn by the browser; ':material/...:' favicons come from a font host
    assert not icon.startswith(":") and len(icon) == 1
