"""The Preference shift page (AppTest on the tiny store) and its pure helpers and charts.

Every number the page shows is checked against ``sarm.shift.prepare_shift`` run
directly on the store, and a hand-over to the Head editor against ``Δw · z``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_app_pages import (  # noqa: F401
    env,
    figures,
    frame_with,
    go,
    metric,
    start,
    store_path,
    values,
)

from app import charts, core, state
from feature_store import FeatureStore, ingest
from sarm import load_sarm
from sarm.head import Head, as_weight
from sarm.interventions import Intervention, parse_actions
from sarm.types import PreferenceGroup
from workflows.shift import prepare_shift


def number(text: str) -> float:
    return float(text.replace(",", ""))


def library_shift(store_path, target="subset:chat", complement="rest"):  # noqa: F811

    store = FeatureStore.open(store_path)  # same process: shares the app's connection
    return prepare_shift(target, complement, store=store), store


def assert_shows(at, report) -> None:
    """The page's metrics are the report's numbers."""
    value, _ = core.selectivity_text(report.selectivity)
    assert metric(at, "Selectivity") == value
    if report.selectivity is not None and math.isfinite(report.selectivity):
        assert number(metric(at, "Selectivity")) == pytest.approx(report.selectivity, abs=6e-4)
    for name in ("target", "complement"):
        part = getattr(report, name)
        shown = number(metric(at, f"Mean |\u0394r| on the {name}"))
        assert shown == pytest.approx(part.mean_abs_delta, abs=1e-6)
        for stage in ("before", "after"):
            acc = getattr(part, f"accuracy_{stage}")
            text = metric(at, f"{name.capitalize()} accuracy {stage}")
            if acc is None:
                assert text == "n/a"
            else:
                assert float(text.rstrip("%")) / 100 == pytest.approx(acc, abs=5e-5)
    table = frame_with(at, "n_flipped").set_index("set")
    expected = core.shift_sets(report).set_index("set")
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)


# ---------------------------------------------------------------- the page


def test_page_renders_and_shows_the_librarys_selectivity(store_path):  # noqa: F811
    at = start("shift")
    assert [t.value for t in at.title] == ["Preference shift"]
    assert not at.error and len(at.get("plotly_chart")) == 2
    shift, _ = library_shift(store_path)
    table = shift.discover(limit=20)
    shown = frame_with(at, "consistency")
    assert shown["feature_id"].tolist() == table["feature_id"].tolist()
    top = table["feature_id"].head(5).astype(int).tolist()
    assert at.multiselect(key="shift_features").value == top
    report = shift.evaluate(parse_actions(["scale:0.0"], top))
    assert_shows(at, report)
    # the overlaid histograms carry exactly the rewards before and after, per set
    hist = figures(at)[0]
    frame = report.distribution_frame()
    for trace in hist["data"]:
        panel = "target" if trace.get("xaxis", "x") == "x" else "complement"
        expected = frame[(frame["set"] == panel) & (frame["stage"] == trace["name"])]["reward"]
        assert values(trace["x"]) == pytest.approx(expected.tolist(), abs=1e-9)


def test_ranking_options_and_several_actions_in_order(store_path):  # noqa: F811
    at = start("shift")
    at.selectbox(key="shift_direction").set_value("both").run()
    at.selectbox(key="shift_order").set_value("selectivity").run()
    at.slider(key="shift_limit").set_value(10).run()
    shift, _ = library_shift(store_path)
    table = shift.discover(limit=10, direction="both", order_by="selectivity")
    assert frame_with(at, "consistency")["feature_id"].tolist() == table["feature_id"].tolist()
    top = table["feature_id"].head(5).astype(int).tolist()
    assert at.multiselect(key="shift_features").value == top  # a new ranking: its top 5
    # add 0.3, then scale by 2: order matters (2(w + 0.3), not 2w + 0.3)
    at.selectbox(key="shift_action_0").set_value("add")
    at.number_input(key="shift_value_0").set_value(0.3).run()
    at.button(key="shift_add_step").click().run()
    at.selectbox(key="shift_action_1").set_value("scale")
    at.number_input(key="shift_value_1").set_value(2.0).run()
    assert not at.exception and not at.error
    report = shift.evaluate(parse_actions(["add:0.3", "scale:2.0"], top))
    assert_shows(at, report)
    swapped = shift.evaluate(parse_actions(["scale:2.0", "add:0.3"], top))
    assert swapped.target.mean_abs_delta != pytest.approx(report.target.mean_abs_delta)
    # typed specs replace the rows; a steering action that only touches the target is infinite
    at.multiselect(key="shift_features").set_value(top[:2]).run()
    at.button(key="shift_remove_0").click().run()
    assert at.selectbox(key="shift_action_1").value == "scale"
    at.text_area(key="shift_specs").input(f"act_mul:0.5; zero@{top[0]}").run()
    report = shift.evaluate(parse_actions(["act_mul:0.5", f"zero@{top[0]}"], top[:2]))
    assert_shows(at, report)


def test_selectivity_is_infinite_when_only_the_target_moves(store_path):  # noqa: F811
    shift, _ = library_shift(store_path)
    latents = shift.data.latents
    counts = np.bincount(latents.indices, minlength=latents.d_sae)
    fid = int(np.argmax(np.where(counts < latents.n, counts, 0)))  # active often, not everywhere
    at = start("shift")
    at.radio(key="shift_target_mode").set_value("Type a spec").run()
    at.text_input(key="shift_target_spec").input(f"feature:{fid}").run()
    at.text_area(key="shift_specs").input(f"scale:3@{fid}").run()
    assert not at.exception and not at.error
    assert metric(at, "Selectivity") == "\u221e"
    assert any("Only the target moved" in c.value for c in at.caption)
    assert number(metric(at, "Mean |\u0394r| on the complement")) == 0.0


def test_set_widgets_build_the_spec_and_bad_specs_are_explained(store_path):  # noqa: F811
    at = start("shift")
    at.multiselect(key="shift_target_roles").set_value(["chosen"]).run()
    assert any("`subset:chat & role:chosen`" in c.value for c in at.caption)
    shift, _ = library_shift(store_path, "subset:chat & role:chosen")
    top = shift.discover(limit=20)["feature_id"].head(5).astype(int).tolist()
    assert_shows(at, shift.evaluate(parse_actions(["scale:0.0"], top)))
    # a built complement
    at.radio(key="shift_complement_mode").set_value("Subsets and roles").run()
    assert any("Choose the complement" in i.value for i in at.info) and not at.exception
    at.multiselect(key="shift_complement_subsets").set_value(["code", "safety"]).run()
    assert any("`subset:code,safety`" in c.value for c in at.caption) and not at.error
    at.multiselect(key="shift_complement_subsets").set_value(["chat"]).run()
    assert any("share" in e.value for e in at.error), [e.value for e in at.error]
    # typed specs: unknown names, sources that would need the model, rest in the target
    at.radio(key="shift_complement_mode").set_value("Rest (not the target)").run()
    at.radio(key="shift_target_mode").set_value("Type a spec").run()
    assert any("Choose the target" in i.value for i in at.info)
    for spec, message in [
        ("subset:nope", "unknown subset ['nope']"),
        ("file:data.jsonl", "cached latents only"),
        ("rest", "only allowed in the complement"),
        ("bogus", "is not one of"),
        ("all", "selects no examples"),
        ("label:no such label", "no feature's label"),
    ]:
        at.text_input(key="shift_target_spec").input(spec).run()
        assert not at.exception, spec
        shown = [e.value.replace("\\", "") for e in at.error]  # input is echoed escaped
        assert any(message in e for e in shown), (spec, shown)
    at.text_input(key="shift_target_spec").input("label:strongest & role:chosen").run()
    assert not at.error and len(at.get("plotly_chart")) == 2
    # bad actions
    at.text_area(key="shift_specs").input("scale:x").run()
    assert any("is not a number" in e.value for e in at.error) and not at.exception
    at.text_area(key="shift_specs").input("zero@999").run()
    assert any("out of range" in e.value for e in at.error) and not at.exception


def test_send_to_editor_changes_the_reward_by_delta_w_times_z(store_path):  # noqa: F811
    at = start("shift")
    at.selectbox(key="shift_direction").set_value("both").run()
    at.selectbox(key="shift_action_0").set_value("scale")
    at.number_input(key="shift_value_0").set_value(-1.5).run()
    shift, store = library_shift(store_path)
    top = shift.discover(limit=20, direction="both")["feature_id"].head(5).astype(int).tolist()
    actions = parse_actions(["scale:-1.5"], top)
    weights, _ = shift.head(actions)
    base, _ = store.head_weights()
    expected = {f: as_weight(weights[f]) for f in top if as_weight(weights[f]) != base[f]}
    assert expected
    at.button(key="shift_send").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Head editor"]
    assert at.session_state["shared_overrides"] == expected
    for f, w in expected.items():
        assert at.slider(key=f"editor_w_{f}").value == pytest.approx(w)
    # an example where the sent features are active: the reward moves by sum_f (w'_f - w_f) z_f
    go(at, "editor")  # AppTest reruns the page it was told last, so name the editor again
    frame = store.examples_frame()
    eid = next(
        int(e)
        for e in frame["example_id"]
        if set(store.example(int(e)).features["feature_id"]) & set(expected)
    )
    at.selectbox(key="editor_example").set_value(eid).run()
    feats = store.example(eid).features
    acts = dict(zip(feats["feature_id"].astype(int), feats["activation"], strict=True))
    delta = sum((w - float(base[f])) * acts.get(f, 0.0) for f, w in expected.items())
    before = number(metric(at, "Reward (base head)"))
    after = number(metric(at, "Reward (edited)"))
    assert delta != 0.0 and after - before == pytest.approx(delta, abs=2e-6)
    assert metric(at, "Changed weights") == str(len(expected))


def test_save_as_head_version(store_path):  # noqa: F811

    at = start("shift")
    shift, _ = library_shift(store_path)
    top = shift.discover(limit=20)["feature_id"].head(5).astype(int).tolist()
    actions = parse_actions(["scale:0.0"], top)
    report = shift.evaluate(actions)
    at.text_input(key="shift_save_name").input("no-chat-bonus")
    at.text_input(key="shift_save_author").input("tester")
    at.button(key="shift_save").click().run()
    assert not at.exception and not at.error
    assert any("Saved head version 'no-chat-bonus'" in s.value for s in at.success)
    with FeatureStore.open(store_path) as store:
        version = store.load_head("no-chat-bonus")
        assert "no-chat-bonus" in set(store.head_versions()["name"])
    assert version.parent == "ingest" and version.author == "tester"
    assert "target subset:chat" in version.note and "scale:0.0@" in version.note
    np.testing.assert_array_equal(version.weights, shift.head(actions)[0])
    assert version.metrics == pytest.approx(report.to_metrics())
    # names are immutable
    at.button(key="shift_save").click().run()
    assert any("already exists" in e.value for e in at.error) and not at.exception


def test_act_add_is_previewed_but_not_sent_or_saved(store_path):  # noqa: F811

    at = start("shift")
    at.selectbox(key="shift_action_0").set_value("act_add")
    at.number_input(key="shift_value_0").set_value(0.5).run()
    shift, _ = library_shift(store_path)
    top = shift.discover(limit=20)["feature_id"].head(5).astype(int).tolist()
    assert_shows(at, shift.evaluate(parse_actions(["act_add:0.5"], top)))
    assert any("no linear head" in w.value for w in at.warning)
    assert at.button(key="shift_send").disabled
    at.text_input(key="shift_save_name").input("steered")
    at.button(key="shift_save").click().run()
    assert any("cannot be folded into a head" in e.value for e in at.error)
    assert not at.exception and at.session_state["shared_overrides"] == {}
    with FeatureStore.open(store_path) as store:
        assert "steered" not in set(store.head_versions()["name"])


# ---------------------------------------------------------------- pure helpers


def test_set_spec_and_cached_specs():
    assert core.set_spec(["chat", "code"], ["chosen"]) == "subset:chat,code & role:chosen"
    assert core.set_spec([], ["rejected"]) == "role:rejected"
    assert core.set_spec() == ""
    with pytest.raises(ValueError, match="cannot be written"):
        core.set_spec(["a,b"])
    assert core.check_cached_spec(" subset:chat & role:chosen ") == "subset:chat & role:chosen"
    for bad, message in [("demo:test", "cached latents only"), ("", "non-empty"), ("x", "not one")]:
        with pytest.raises(ValueError, match=message):
            core.check_cached_spec(bad)


def test_shift_actions_keep_their_order():
    steps = [("add", 0.3), ("scale", 2.0), ("zero", 9.0)]
    got = core.shift_actions(steps, [4, 2])
    assert got == [
        Intervention("add", (4, 2), 0.3),
        Intervention("scale", (4, 2), 2.0),
        Intervention("zero", (4, 2)),
    ]
    typed = core.shift_actions(steps, [4], "set:1.5\nact_add:0.1@7,8; zero")
    assert [a.spec() for a in typed] == ["set:1.5@4", "act_add:0.1@7,8", "zero@4"]
    assert core.unfoldable(typed) == ["act_add:0.1@7,8"]
    assert core.shift_actions([], [], "scale:0@3")[0].features == (3,)
    with pytest.raises(ValueError, match="choose at least one feature"):
        core.shift_actions(steps, [])
    with pytest.raises(ValueError, match="names no features"):
        core.shift_actions([], [], "scale:0")


def test_head_take_rounds_and_drops_unchanged():
    base = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)
    new = np.array([0.5, 0.1, 2.0, 3.0])
    got = Head(base, overrides={0: 7.0, 2: 1.0}).take(new, [1, 2, 3]).overrides
    assert got == {0: 7.0, 1: as_weight(0.1), 3: 3.0}  # 2 is back to its base weight
    assert Head(base).take(base, [0, 1]).overrides == {}


def test_selectivity_text():
    assert core.selectivity_text(None)[0] == "n/a"
    value, meaning = core.selectivity_text(math.inf)
    assert value == "\u221e" and "Only the target moved" in meaning
    assert core.selectivity_text(2.5)[0] == "2.500"
    assert core.selectivity_text(1234.5)[0] == "1,234.500"
    assert core.selectivity_text(12345.0)[0] == "1.234e+04"


def test_shift_charts_carry_the_data():
    frame = pd.DataFrame(
        {
            "set": ["target"] * 4 + ["complement"] * 4,
            "stage": ["before", "before", "after", "after"] * 2,
            "reward": [1.0, 2.0, 0.5, 1.5, -1.0, 0.0, -1.0, 0.1],
        }
    )
    fig = charts.shift_histograms(frame)
    assert [(t.name, t.xaxis) for t in fig.data] == [
        ("before", "x"),
        ("after", "x"),
        ("before", "x2"),
        ("after", "x2"),
    ]
    assert list(fig.data[1].x) == [0.5, 1.5] and list(fig.data[3].x) == [-1.0, 0.1]
    assert fig.data[0].xbins.size == fig.data[1].xbins.size  # shared bins within a set
    assert fig.layout.barmode == "overlay" and [t.showlegend for t in fig.data] == [
        True,
        True,
        False,
        False,
    ]
    assert fig.layout.xaxis2.title.text == "reward on the complement"
    bars = charts.selectivity_bars(
        {"target": 0.6, "complement": 0.2}, {"target": -0.6, "complement": 0.1}, 3.0
    )
    assert list(bars.data[0].y) == [0.6, 0.2] and list(bars.data[1].y) == [-0.6, 0.1]
    assert bars.layout.title.text.endswith("= 3")
    assert charts.selectivity_bars({"t": 1.0}, {"t": 1.0}, math.inf).layout.title.text.endswith(
        "\u221e"
    )
    assert charts.selectivity_bars({"t": 0.0}, {"t": 0.0}, None).layout.title.text.endswith("n/a")


def test_before_is_the_head_with_the_editors_edits(store_path):  # noqa: F811
    at = start("editor")
    at.button(key="editor_add_top").click().run()
    fid = next(iter(at.session_state["shared_editor_features"]))
    at.button(key=f"editor_zero_{fid}").click().run()
    go(at, "shift")
    assert any("Under the edited head" in c.value for c in at.caption)
    shift, store = library_shift(store_path)
    weights, bias = store.head_weights()
    weights = weights.copy()
    weights[fid] = 0.0

    edited = prepare_shift("subset:chat", "rest", store=store, weight=weights, bias=bias)
    top = edited.discover(limit=20)["feature_id"].head(5).astype(int).tolist()
    report = edited.evaluate(parse_actions(["scale:0.0"], top))
    assert_shows(at, report)
    hist = figures(at)[0]["data"][0]  # the target's rewards before: under the edited head
    assert values(hist["x"]) == pytest.approx(report.target.rewards_before.tolist(), abs=1e-9)
    assert report.target.rewards_before.tolist() != pytest.approx(
        shift.base_rewards[shift.target].tolist(), abs=1e-9
    )


def test_a_store_without_pairs(env, monkeypatch, tmp_path):  # noqa: F811

    p = ({"role": "user", "content": "Say something."},)
    groups = [PreferenceGroup(f"s{i}", p, (f"Reply number {i}.",), kind="single") for i in range(6)]
    path = tmp_path / "singles.duckdb"
    with FeatureStore.open(path) as store:
        ingest(store, load_sarm(env.model_dir), groups, top_n=2, progress=False)
        latents = store.latent_matrix()
    counts = np.bincount(latents.indices, minlength=latents.d_sae)
    fid = int(np.argmax(np.where(counts < len(groups), counts, 0)))
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(path))
    try:
        at = start("shift")
        assert any("Choose the target" in i.value for i in at.info)
        at.radio(key="shift_target_mode").set_value("Type a spec").run()
        at.text_input(key="shift_target_spec").input(f"feature:{fid}").run()
        assert not at.exception and not at.error
        assert metric(at, "Target accuracy before") == "n/a"
        assert len(at.get("plotly_chart")) == 2
    finally:
        state.open_store.clear()
