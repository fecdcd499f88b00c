"""Explanations in the dashboard: names everywhere, the feature page's lead, plain text."""

from __future__ import annotations

import pytest
from app_env import build_app_env, copy_store
from test_app_pages import figures, go, start

from app import state
from feature_store import FeatureStore
from feature_store.explanations import run_stats_explainer, save_explanations
from sarm.explain.text import window_line
from sarm.explain.types import EvidenceWindow, Explanation


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "app-env"
    root.mkdir(exist_ok=True)
    return build_app_env(root)


@pytest.fixture
def explained(env, tmp_path, monkeypatch):
    path = copy_store(env, tmp_path / "store.duckdb")
    with FeatureStore.open(path) as store:
        run_stats_explainer(store)
        top = int(store.features(order_by="abs_contribution", limit=2)["feature_id"].iloc[1])
        hostile = "**bold** <b>x</b> [link](http://evil.example)"
        save_explanations(store, [Explanation(top, hostile, "llm:test", "1", 0.75)])
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(path))
    yield path, top, hostile
    state.open_store.clear()


def test_window_line_marks_peak_and_scored_token():
    w = EvidenceWindow(1, ("I", " can", "'t", "\n", "<eot>"), (0, 2.0, 1.0, 0, 0.5), True, 1, 4)
    assert window_line(w) == "I⟦ can⟧'t⏎⟨<eot>⟩"


def test_feature_page_leads_with_the_explanation_as_plain_text(explained):
    _, top, hostile = explained
    at = start("features")
    at.number_input(key="features_fid").set_value(top).run()
    assert not at.exception, [e.value for e in at.exception]
    bold = [m.value for m in at.markdown if "bold" in m.value]
    assert bold and "\\*\\*bold\\*\\*" in bold[0] and "<b>" not in bold[0]  # escaped, literal
    captions = " ".join(c.value for c in at.caption)
    assert "detection score" in captions and "0.75" in captions and "llm\\:test" in captions
    assert "active on" in captions  # density from the stored counters
    assert any("⟦" in m.value for m in at.markdown)  # a stored window with its peak marked
    table = at.dataframe(key="features_table").value.set_index("feature_id")
    assert table.loc[top, "explanation"] == hostile and table.loc[top, "score"] == 0.75
    assert table["explanation"].notna().sum() >= 2  # stats explanations of the others


def test_charts_name_features_by_explanation(explained):
    path, top, hostile = explained
    at = start()
    go(at, "explain")
    names = [str(y) for fig in figures(at) for trace in fig["data"] for y in trace.get("y", [])]
    with FeatureStore.open(path, read_only=True) as store:
        titles = store.titles_for(range(store.d_sae))
    assert titles[top].startswith(hostile) and titles[top].endswith("(0.75)")
    assert any("\u00b7" in n and n.split(" \u00b7 ")[0].startswith("f") for n in names)
    assert not any("<b>x</b>" in n for n in names)  # chart text is escaped


def test_features_table_filters_by_explanation_text_source_and_score(explained):
    _, top, _ = explained
    at = start("features")
    at.text_input(key="features_explained_text").input("EVIL.example").run()
    assert at.dataframe(key="features_table").value["feature_id"].tolist() == [top]
    at.text_input(key="features_explained_text").input("").run()
    at.selectbox(key="features_source").set_value("llm").run()
    assert at.dataframe(key="features_table").value["feature_id"].tolist() == [top]
    at.selectbox(key="features_source").set_value("any").run()
    at.number_input(key="features_min_score").set_value(0.75).run()
    shown = at.dataframe(key="features_table").value
    assert (shown["score"] >= 0.75).all() and top in shown["feature_id"].tolist()
    at.number_input(key="features_min_score").set_value(0.8).run()
    tables = [d.value for d in at.dataframe if "explanation" in d.value.columns]
    assert not tables or top not in tables[0]["feature_id"].tolist()


def test_explained_features_filter():
    import pandas as pd

    from app.choices import explained_features

    shown = pd.DataFrame(
        {
            "feature": [1, 2, 3],
            "text": ["Refusal", "`I can't`", "code"],
            "source": ["label", "stats", "llm:m"],
            "score": [float("nan"), 0.8, 0.6],
        }
    )
    assert explained_features(shown, "", "any", 0.0) is None
    assert explained_features(shown, "can'T", "any", 0.0) == [2]
    assert explained_features(shown, "", "llm", 0.0) == [3]
    assert explained_features(shown, "", "any", 0.7) == [2]


def test_features_table_sorts_by_explanation_score(explained):
    path, _, _ = explained
    at = start("features")
    at.selectbox(key="features_order").set_value("explanation_score").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe(key="features_table").value
    with FeatureStore.open(path, read_only=True) as store:
        ref = store.display_explanations().set_index("feature")["score"]
    scores = [ref.get(f) for f in shown["feature_id"]]
    scored = [s for s in scores if s == s and s is not None]
    assert scored == sorted(scored, reverse=True) and scored[0] >= 0.75
    assert scores[: len(scored)] == scored  # unscored features come after the scored ones


def test_feature_page_shows_the_text_ceiling_stored_with_the_explanation(explained):
    from feature_store.explanations import firing_features
    from feature_store.text_ceiling import text_ceilings, with_ceilings

    path, _, _ = explained
    with FeatureStore.open(path) as store:
        ceilings = text_ceilings(store, firing_features(store))
        fid = next(f for f, c in ceilings.items() if c is not None)  # both classes held out
        found = Explanation(fid, "ends with a question", "llm:test", "2", 0.99)
        save_explanations(store, with_ceilings([found], ceilings))
        shown = store.display_explanations().set_index("feature")
    assert shown.loc[fid, "text"] == "ends with a question"  # the best score is shown
    assert shown.loc[fid, "ceiling"] == pytest.approx(ceilings[fid])
    at = start("features")
    at.number_input(key="features_fid").set_value(fid).run()
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "text ceiling" in captions and f"{ceilings[fid]:.2f}" in captions
    at.number_input(key="features_fid").set_value(int(shown.index[0])).run()
    if shown.index[0] != fid:  # an explanation written without --ceiling says how to get one
        assert "not measured" in " ".join(c.value for c in at.caption)
