"""Deep links (every page restores its subject from the URL) and widget state kept across pages."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash
from test_app_pages import APP, env, go, metric, start, store_path  # noqa: F401

from app import choices, core, state
from feature_store import FeatureStore
from sarm.audit import pair_table
from sarm.head import Head


def open_link(page: str, **params: str) -> AppTest:
    """A new session opened at ``/page?params`` (what pasting a copied link does)."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    at._page_hash = calc_hash(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_link(at: AppTest) -> str:
    codes = [c.value for c in at.code if c.value.startswith("/")]
    assert codes, "no copyable link"
    return codes[0]


def pairs(store_path):  # noqa: F811
    with FeatureStore.open(store_path) as store:
        frame = store.examples_frame().reset_index(drop=True)
        weights, bias = store.head_weights()
        data = core.load_dataset(store)
    return pair_table(Head(weights, bias).rewards(data.latents), data.index, frame)


# ---------------------------------------------------------------- plain helpers


def test_page_urls_and_pair_params():
    assert core.page_url("features", {"feature": "12"}) == "/features?feature=12"
    assert core.page_url("overview") == "/"
    assert core.page_url("shift", {"target": "subset:a & role:chosen", "complement": "rest"}) == (
        "/shift?target=subset%3Aa+%26+role%3Achosen&complement=rest"
    )
    assert core.parse_pair(core.pair_param(12, 13)) == (12, 13)
    for bad in ("12", "a-b", "1-2-3", "-1-2"):
        with pytest.raises(ValueError, match=r"pair|whole number"):
            core.parse_pair(bad)
    assert core.link_id(" 7 ", "feature id", 8) == 7
    with pytest.raises(ValueError, match="out of range"):
        core.link_id("8", "feature id", 8)


def test_set_specs_from_links_go_back_into_the_set_widgets():
    subsets, roles = ["chat", "code"], ["chosen", "rejected"]
    assert choices.set_widgets("subset:chat,code & role:chosen", subsets, roles) == (
        "build",
        ["chat", "code"],
        ["chosen"],
    )
    assert choices.set_widgets("role:rejected", subsets, roles) == ("build", [], ["rejected"])
    assert choices.set_widgets("rest", subsets, roles, rest=True) == ("rest", [], [])
    for typed in ("subset:!chat", "subset:other", "feature:1,2", "rest", "subset:chat & all"):
        assert choices.set_widgets(typed, subsets, roles)[0] == "typed", typed


def test_example_options_put_an_asked_example_in_front():
    assert choices.example_options(range(10), None, limit=3) == [0, 1, 2]
    assert choices.example_options(range(10), 7, limit=3) == [7, 0, 1, 2]
    assert choices.example_options(range(10), 1, limit=3) == [0, 1, 2]
    assert choices.example_options(range(10), 99, limit=3) == [0, 1, 2]


# ---------------------------------------------------------------- every page restores from the URL


def test_features_page_restores_the_feature_from_the_url(store_path):  # noqa: F811
    first = start("features").number_input(key="features_fid").value
    fid = 7 if first != 7 else 8
    at = open_link("features", feature=str(fid))
    assert [t.value for t in at.title] == ["Features"]
    assert at.number_input(key="features_fid").value == fid
    assert at.header[0].value.startswith(f"Feature {fid}")
    assert shown_link(at) == f"/features?feature={fid}"
    # the URL follows the page: another feature typed in, and the link says so
    at.number_input(key="features_fid").set_value(fid + 1).run()
    assert at.query_params["feature"] == str(fid + 1)
    assert shown_link(at) == f"/features?feature={fid + 1}"
    # a bad link is explained, not a traceback
    bad = open_link("features", feature="99999")
    assert any("out of range" in w.value for w in bad.warning)
    assert bad.number_input(key="features_fid").value == first


def test_compare_restores_the_pair_from_the_url(store_path):  # noqa: F811
    table = pairs(store_path)
    row = table.iloc[len(table) // 2]
    param = core.pair_param(row["chosen_id"], row["rejected_id"])
    at = open_link("compare", pair=param)
    assert at.selectbox(key="compare_pair").value == int(row["pair"])
    assert float(metric(at, "Margin")) == pytest.approx(row["margin"], abs=2e-5)
    assert shown_link(at) == f"/compare?pair={param}"
    unknown = open_link("compare", pair="9999-9998")
    assert any("not a pair of this store" in w.value for w in unknown.warning)


def test_a_linked_pair_clears_the_filters_that_hide_it(store_path):  # noqa: F811
    table = pairs(store_path)
    right = table[table["correct"]].iloc[0]
    at = start("compare")
    at.toggle(key="compare_wrong").set_value(True).run()
    at.query_params["pair"] = core.pair_param(right["chosen_id"], right["rejected_id"])
    at.run()
    assert not at.exception
    assert at.toggle(key="compare_wrong").value is False
    assert at.selectbox(key="compare_pair").value == int(right["pair"])
    assert any("Filters cleared" in c.value for c in at.caption)


def test_misranked_only_never_keeps_a_correctly_ranked_pair(store_path):  # noqa: F811
    table = pairs(store_path)
    right = table[table["correct"]].iloc[-1]
    wrong = table[~table["correct"]].sort_values("margin")
    at = open_link("compare", pair=core.pair_param(right["chosen_id"], right["rejected_id"]))
    assert at.selectbox(key="compare_pair").value == int(right["pair"])
    at.toggle(key="compare_wrong").set_value(True).run()
    picker = at.selectbox(key="compare_pair")
    assert picker.options == [picker.format_func(int(p)) for p in wrong["pair"]]  # worst first
    assert picker.value == int(wrong["pair"].iloc[0])
    assert "(misranked)" in picker.format_func(picker.value)


def test_explain_restores_the_example_from_the_url(store_path):  # noqa: F811
    with FeatureStore.open(store_path) as store:
        frame = store.examples_frame()
    eid = int(frame["example_id"].iloc[-3])
    at = open_link("explain", example=str(eid))
    assert at.selectbox(key="explain_example").value == eid
    assert shown_link(at) == f"/explain?example={eid}"
    # the roles filter hides it: a link to it clears the filter
    role = frame.set_index("example_id").loc[eid, "role"]
    other = next(r for r in frame["role"].unique() if r != role)
    at.multiselect(key="explain_roles").set_value([other]).run()
    assert at.selectbox(key="explain_example").value != eid
    at.query_params["example"] = str(eid)
    at.run()
    assert at.selectbox(key="explain_example").value == eid
    assert at.multiselect(key="explain_roles").value == []
    assert any("not in this store" in w.value for w in open_link("explain", example="9999").warning)


def test_editor_restores_the_head_version_from_the_url(store_path):  # noqa: F811
    with FeatureStore.open(store_path) as store:
        weights, bias = store.head_weights()
        store.save_head("halved", weights * 0.5, bias, parent="ingest", note="test")
    at = open_link("editor", head="halved")
    assert at.session_state[state.HEAD_BASE] == "halved"
    assert at.selectbox(key="editor_base").value == "halved"
    assert "**Head** halved" in " ".join(m.value for m in at.sidebar.markdown)
    assert shown_link(at) == "/editor?head=halved"
    # switching the base moves the link
    at.selectbox(key="editor_base").set_value("ingest").run()
    assert at.query_params["head"] == "ingest"
    unknown = open_link("editor", head="nope")
    assert any("not in this store" in w.value for w in unknown.warning)
    assert unknown.session_state[state.HEAD_BASE] == "ingest"


def test_shift_restores_the_sets_from_the_url(store_path):  # noqa: F811
    at = open_link("shift", target="subset:code & role:chosen", complement="rest")
    assert not at.error
    assert at.radio(key="shift_target_mode").value == "Subsets and roles"
    assert at.multiselect(key="shift_target_subsets").value == ["code"]
    assert at.multiselect(key="shift_target_roles").value == ["chosen"]
    assert at.radio(key="shift_complement_mode").value.startswith("Rest")
    assert at.query_params["target"] == "subset:code & role:chosen"
    typed = open_link("shift", target="subset:!chat", complement="subset:chat")
    assert typed.radio(key="shift_target_mode").value == "Type a spec"
    assert typed.text_input(key="shift_target_spec").value == "subset:!chat"
    assert typed.multiselect(key="shift_complement_subsets").value == ["chat"]
    assert not typed.error and len(typed.get("plotly_chart")) == 2


def test_buttons_that_open_a_page_put_its_subject_in_the_url(store_path):  # noqa: F811
    at = start("explain")
    fid = int(at.selectbox(key="explain_feature").value)
    at.button(key="explain_open_feature").click().run()
    assert at.number_input(key="features_fid").value == fid
    assert at.query_params.get("feature") == str(fid)
    assert "example" not in at.query_params


# ---------------------------------------------------------------- widget state across pages


def test_compare_filters_and_pair_survive_a_page_switch(store_path):  # noqa: F811
    at = start("compare")
    at.toggle(key="compare_wrong").set_value(True).run()
    pair = at.selectbox(key="compare_pair").options[-1]
    at.selectbox(key="compare_pair").select(pair).run()
    chosen = at.selectbox(key="compare_pair").value
    go(at, "overview")
    go(at, "compare")
    assert at.toggle(key="compare_wrong").value is True
    assert at.selectbox(key="compare_pair").value == chosen


def test_features_filters_survive_a_page_switch(store_path):  # noqa: F811
    at = start("features")
    at.selectbox(key="features_order").set_value("feature_id").run()
    at.toggle(key="features_desc").set_value(False).run()
    at.number_input(key="features_fid").set_value(5).run()
    go(at, "audit")
    go(at, "features")
    assert at.selectbox(key="features_order").value == "feature_id"
    assert at.toggle(key="features_desc").value is False
    assert at.number_input(key="features_fid").value == 5


def test_shift_target_and_ranking_survive(store_path):  # noqa: F811
    at = start("shift")
    at.slider(key="shift_limit").set_value(12).run()
    # clearing the target stops the page; choosing one again finds the ranking size as it was
    at.multiselect(key="shift_target_subsets").set_value([]).run()
    assert any("Choose the target" in i.value for i in at.info)
    at.multiselect(key="shift_target_subsets").set_value(["code"]).run()
    assert at.slider(key="shift_limit").value == 12
    # leaving the page keeps the target (not the default first subset) and the choices
    at.multiselect(key="shift_features").set_value(at.multiselect(key="shift_features").value[:2])
    at.run()
    features = at.multiselect(key="shift_features").value
    go(at, "editor")
    go(at, "shift")
    assert at.multiselect(key="shift_target_subsets").value == ["code"]
    assert at.slider(key="shift_limit").value == 12
    assert at.multiselect(key="shift_features").value == features
    # a cleared target stays cleared after a page switch
    at.multiselect(key="shift_target_subsets").set_value([]).run()
    go(at, "overview")
    go(at, "shift")
    assert at.multiselect(key="shift_target_subsets").value == []
