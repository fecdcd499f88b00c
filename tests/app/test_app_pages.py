"""Every dashboard page under Streamlit's AppTest, against a tiny SARM and store built here."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from app_env import build_app_env, copy_store
from helpers import make_tiny_sarm
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from app import state
from app.core import load_dataset
from app.state import progress_label
from feature_store import FeatureStore, ingest
from sarm import load_sarm
from sarm.checkpoints import save_sarm
from sarm.head import Head
from sarm.types import PreferenceGroup

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGES = {
    "overview": ("SARM dashboard", 0),
    "explain": ("Explain a score", 2),
    "compare": ("Compare a pair", 1),
    "features": ("Features", 1),
    "editor": ("Head editor", 2),
    "export": ("Export the head", 0),
    "audit": ("Audit", 3),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "app-env"
    root.mkdir(exist_ok=True)
    return build_app_env(root)


@pytest.fixture(scope="module")
def model(env):

    return load_sarm(env.model_dir)


@pytest.fixture
def store_path(env, tmp_path, monkeypatch):

    path = copy_store(env, tmp_path / "store.duckdb")
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(path))
    yield path
    state.open_store.clear()  # closes this test's store (on_release)


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        go(at, page)
    return at


def go(at: AppTest, page: str) -> None:
    """Open the page whose URL path is ``page``, as a browser at ``/page`` would.

    The pages are functions (``st.Page(render, url_path=...)``); AppTest.switch_page
    only finds file pages, so request the page's script hash: that of its URL path.
    """
    at._page_hash = calc_hash(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(v) -> list:
    """A figure array from its JSON spec (plotly writes numpy arrays as typed base64)."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def frame_with(at: AppTest, column: str):
    """The first shown dataframe that has ``column`` (plain dataframes cannot be found by key)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no dataframe with column {column!r}"
    return found[0]


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return found[0]


def relative_sum(fig: dict) -> float:
    trace = fig["data"][0]
    return sum(
        x for x, m in zip(values(trace["x"]), trace["measure"], strict=True) if m == "relative"
    )


def test_every_page_renders_its_charts(store_path):
    at = start()
    for page, (title, n_charts) in PAGES.items():
        go(at, page)
        assert [t.value for t in at.title] == [title], page
        assert len(at.get("plotly_chart")) >= n_charts, page
        assert not at.error, (page, [e.value for e in at.error])
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "**Head** ingest" in sidebar and "35 responses" in sidebar and "layer 2" in sidebar


def test_explain_waterfall_is_the_models_score(store_path, model):

    at = start("explain")
    eid = at.selectbox(key="explain_example").value
    with FeatureStore.open(store_path) as store:  # same process: shares the app's connection
        conversation = store.example(eid).conversation()
    reference = model.score(messages=conversation)
    shown = float(metric(at, "Reward"))
    assert shown == pytest.approx(reference.reward, abs=2e-6)
    waterfall = figures(at)[0]
    assert relative_sum(waterfall) == pytest.approx(reference.reward, abs=1e-6)
    assert waterfall["data"][0]["y"][-1] == "reward"
    # another example, chosen through the filters
    at.multiselect(key="explain_roles").set_value(["rejected"]).run()
    at.selectbox(key="explain_example").set_value(3).run()
    with FeatureStore.open(store_path) as store:
        ref3 = model.score(messages=store.example(3).conversation()).reward
    assert float(metric(at, "Reward")) == pytest.approx(ref3, abs=2e-6)
    # the trajectory ends at the reward, and the highlight is escaped HTML of the tokens
    trajectory = figures(at)[1]
    r_t = values(next(t for t in trajectory["data"] if t.get("name") == "r_t")["y"])
    assert r_t[-1] == pytest.approx(ref3, abs=1e-4)


def test_explain_typed_text_and_bad_input(store_path, model):
    at = start("explain")
    at.radio(key="explain_source").set_value("Type a prompt and response").run()
    assert at.info and not at.exception
    at.text_area(key="explain_prompt").input("How do I boil an egg?")
    at.text_area(key="explain_response").input("Boil it for <b>8</b> minutes.")
    at.button(key="FormSubmitter:explain_typed_form-Score").click().run()
    assert not at.exception
    ref = model.score("How do I boil an egg?", "Boil it for <b>8</b> minutes.")
    assert float(metric(at, "Reward")) == pytest.approx(ref.reward, abs=2e-6)
    assert relative_sum(figures(at)[0]) == pytest.approx(ref.reward, abs=1e-6)
    body = next(h.proto.body for h in at.get("html") if "sarm-hl" in h.proto.body)
    spans = re.findall(r'<span class="sarm-tok"[^>]*>(.*?)</span>', body, flags=re.S)
    assert "<b>" not in body and "<b>8</b>" in html.unescape("".join(spans))
    at.text_area(key="explain_prompt").input("   ")
    at.button(key="FormSubmitter:explain_typed_form-Score").click().run()
    assert not at.exception
    assert any("turn 1 (user) is empty" in e.value for e in at.error)


def test_compare_margin_is_decomposed(store_path, model):

    at = start("compare")
    pair = at.selectbox(key="compare_pair").value
    at.toggle(key="compare_wrong").set_value(True).run()
    assert not at.exception
    pair = at.selectbox(key="compare_pair").value
    label = at.selectbox(key="compare_pair").format_func(pair)
    assert "(misranked)" in label
    chosen, rejected = (
        int(x.split()[0].lstrip("#")) for x in label.split(" \u00b7 ")[2].split(" vs ")
    )
    with FeatureStore.open(store_path) as store:
        rc = model.score(messages=store.example(chosen).conversation()).reward
        rr = model.score(messages=store.example(rejected).conversation()).reward
    assert float(metric(at, "Margin")) == pytest.approx(rc - rr, abs=4e-6) and rc <= rr
    fig = figures(at)[0]
    # the bars are the stored (float32) latents' contributions: the same tolerance against a
    # fresh forward pass as the metric above
    assert relative_sum(fig) == pytest.approx(rc - rr, abs=4e-6)
    assert fig["data"][0]["y"][-1] == "margin"
    assert len([h for h in at.get("html") if "sarm-hl" in h.proto.body]) == 2


def test_compare_typed(store_path, model):
    at = start("compare")
    at.radio(key="compare_source").set_value("Type two responses to one prompt").run()
    at.text_area(key="compare_prompt").input("Name a fruit.")
    at.text_area(key="compare_a").input("An apple.")
    at.text_area(key="compare_b").input("No.")
    at.button(key="FormSubmitter:compare_typed_form-Compare").click().run()
    assert not at.exception
    margin = (
        model.score("Name a fruit.", "An apple.").reward
        - model.score("Name a fruit.", "No.").reward
    )
    assert float(metric(at, "Margin")) == pytest.approx(margin, abs=4e-6)


def test_features_table_and_feature_page(store_path):

    at = start("features")
    with FeatureStore.open(store_path) as store:
        table = store.features(order_by="abs_contribution", limit=50)
        top = int(table["feature_id"].iloc[0])
        hist = store.feature_histogram(top)
        n_top = len(store.top_examples(top, 20))
    assert at.number_input(key="features_fid").value == top
    shown = at.dataframe(key="features_table").value
    assert shown["feature_id"].tolist() == table["feature_id"].tolist()
    hist_fig = figures(at)[0]
    assert values(hist_fig["data"][0]["y"]) == hist["count"].tolist()
    assert len(frame_with(at, "rank")) == n_top
    # opening reads the store only: nothing is highlighted until asked (a forward each)
    assert not [h for h in at.get("html") if "sarm-hl" in h.proto.body]
    at.button(key="features_highlight").click().run()
    assert len([h for h in at.get("html") if "sarm-hl" in h.proto.body]) == min(3, n_top)
    at.selectbox(key="features_order").set_value("feature_id").run()
    at.toggle(key="features_desc").set_value(False).run()
    assert at.dataframe(key="features_table").value["feature_id"].tolist()[:3] == [0, 1, 2]
    at.radio(key="features_labelled").set_value("labelled").run()
    assert at.dataframe(key="features_table").value["label"].tolist() == ["Strongest feature"]
    at.text_input(key="features_search").input("no such label").run()
    assert any("No feature matches" in i.value for i in at.info) and not at.exception


def test_audit_click_through_to_compare(store_path):
    at = start("audit")
    wrong = frame_with(at, "reward_rejected")
    assert wrong["margin"].is_monotonic_increasing and (wrong["margin"] <= 0).all()
    pick = at.selectbox(key="audit_wrong_pick")
    target = wrong.iloc[1]
    pick.set_value(int(target["pair"])).run()
    at.button(key="audit_wrong_open").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Compare a pair"]
    label = at.selectbox(key="compare_pair").format_func(at.selectbox(key="compare_pair").value)
    assert f"#{target['chosen_id']} vs #{target['rejected_id']}" in label
    assert float(metric(at, "Margin")) == pytest.approx(target["margin"], abs=2e-6)


def test_audit_error_features_sum_to_the_misranked_margin(store_path):
    at = start("audit")
    wrong = frame_with(at, "reward_rejected")
    errors = frame_with(at, "margin_sum")
    assert errors["margin_sum"].sum() == pytest.approx(wrong["margin"].sum(), abs=1e-6)
    accuracy = frame_with(at, "accuracy").set_index("subset")
    assert set(accuracy.index) == {"chat", "code", "safety", "rmbench"}
    n_wrong = len(wrong)
    assert float(metric(at, "Pairwise accuracy").rstrip("%")) / 100 == pytest.approx(
        1 - n_wrong / int(metric(at, "Pairs")), abs=1e-4
    )


@pytest.mark.parametrize(
    ("which", "value", "message"),
    [
        ("SARM_STORE", "missing.duckdb", "no feature store"),
        ("SARM_MODEL", "not-a-dir", "neither one of default, smollm2-demo nor an existing"),
    ],
)
def test_bad_sources_are_explained(store_path, monkeypatch, tmp_path, which, value, message):
    monkeypatch.setenv(which, str(tmp_path / value))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_model_and_store_must_match(store_path, monkeypatch, tmp_path):

    other = make_tiny_sarm(tmp_path, seed=9, d_sae=64, k=8)
    save_sarm(other, tmp_path / "other", include_backbone=True)
    monkeypatch.setenv("SARM_MODEL", str(tmp_path / "other"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("different model" in e.value for e in at.error)


def test_sidebar_switches_store_only_when_valid(store_path, env, tmp_path):
    at = start("overview")
    at.sidebar.text_input(key="sidebar_store").input(str(tmp_path / "nope.duckdb"))
    at.sidebar.button(key="sidebar_apply").click().run()
    assert any("no feature store" in e.value for e in at.sidebar.error)
    assert metric(at, "Responses") == "35"
    other = copy_store(env, tmp_path / "other.duckdb")
    at.sidebar.text_input(key="sidebar_store").input(str(other))
    at.sidebar.button(key="sidebar_apply").click().run()
    assert not at.exception and not at.sidebar.error
    assert "other.duckdb" in " ".join(m.value for m in at.sidebar.markdown)


@pytest.mark.parametrize(
    ("model", "title"),
    [(None, "Build the default store"), ("smollm2-demo", "Build the demo SARM")],
)
def test_build_page_when_a_builtin_store_is_missing(monkeypatch, tmp_path, model, title):
    monkeypatch.delenv("SARM_MODEL", raising=False)
    if model:
        monkeypatch.setenv("SARM_MODEL", model)
    monkeypatch.delenv("SARM_STORE", raising=False)
    monkeypatch.setenv("SARM_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == [title]
    assert at.button(key="build_start").label == "Build now"


def test_progress_label():

    assert progress_label("sae", 0.45) == "sae \u2014 45%"
    assert progress_label("done", 1.7) == "done \u2014 100%"


def test_dataset_arrays_match_the_store(store_path):

    with FeatureStore.open(store_path) as store:
        data = load_dataset(store)
        frame = store.examples_frame()
        weights, bias = store.head_weights()
    np.testing.assert_allclose(
        Head(weights, bias).rewards(data.latents), frame["reward"], atol=1e-5
    )
    assert (
        data.index.n_pairs == 12 + 3 + 9
        and data.row(int(frame["example_id"].iloc[-1])) == len(frame) - 1
    )
    with pytest.raises(LookupError):
        data.row(10_000)


def test_every_page_copes_with_a_store_without_pairs(env, monkeypatch, tmp_path):

    p = ({"role": "user", "content": "Say something."},)
    groups = [PreferenceGroup(f"s{i}", p, (f"Reply number {i}.",), kind="single") for i in range(4)]
    path = tmp_path / "singles.duckdb"
    with FeatureStore.open(path) as store:
        ingest(store, load_sarm(env.model_dir), groups, top_n=2, progress=False)
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(path))
    try:
        at = start()
        assert metric(at, "Pairs") == "0" and metric(at, "Pairwise accuracy") == "n/a"
        for page in PAGES:
            go(at, page)
        go(at, "compare")
        assert any("no (chosen, rejected) pairs" in i.value for i in at.info)
        go(at, "audit")
        assert any("no (chosen, rejected) pairs" in i.value for i in at.info)
    finally:
        state.open_store.clear()
