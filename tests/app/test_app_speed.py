"""What keeps the dashboard quick, checked by structure (never by timings).

- The Head editor's sliders and the numbers they change run in one ``st.fragment``:
  a slider move reruns that part only, not the example picker above it.
- Opening the Features page reads only what the store holds: no forward pass of
  the model (its backbone raises here) until highlights are asked for.
"""

from __future__ import annotations

import pytest
from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState
from test_app_pages import env, go, metric, start, store_path  # noqa: F401

from app import state, widgets
from app.app_pages import editor, features
from feature_store import FeatureStore
from sarm.backbones import Backbone
from sarm.head import as_weight


def recording(monkeypatch, module, name: str, seen: dict) -> None:
    """Wrap ``module.name`` to record the fragment (or None) each call runs in."""
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.setdefault(name, []).append(ThreadState.get().fragment_id)
        return inner(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def test_the_sliders_and_their_results_run_in_a_fragment(store_path, monkeypatch):  # noqa: F811
    seen: dict[str, list] = {}
    for name in ("_sliders", "_results", "_add_features", "_save"):
        recording(monkeypatch, editor, name, seen)
    recording(monkeypatch, widgets, "example_picker", seen)
    recording(monkeypatch, state, "sidebar_head", seen)
    at = start("editor")
    seen.clear()  # (start runs the overview first)
    at.button(key="editor_add_top").click().run()
    assert not at.exception
    slider = next(s for s in at.slider if s.key and s.key.startswith("editor_w_"))
    fid = int(slider.key.removeprefix("editor_w_"))
    base = float(metric(at, "Reward (base head)"))
    slider.set_value(0.5 * float(slider.max)).run()
    assert not at.exception
    # the sliders and the metrics they move are drawn inside one fragment ...
    # (and the sidebar's head line, which a fragment may redraw in place)
    inside = set(seen["_sliders"]) | set(seen["_results"]) | set(seen["sidebar_head"])
    assert None not in inside and len(inside) == 1
    # ... the example picker, the feature adders and the save form outside it
    for name in ("example_picker", "_add_features", "_save"):
        assert set(seen[name]) == {None}, name
    # the fragment reads the head from the session, so the slider's edit shows at once
    assert at.session_state["shared_overrides"] == {fid: as_weight(0.5 * float(slider.max))}
    assert metric(at, "Changed weights") == "1"
    heads = [m.value for m in at.sidebar.markdown if m.value.startswith("**Head**")]
    assert len(heads) == 1 and "+ 1 edit " in heads[0]
    with FeatureStore.open(store_path) as store:
        ex = store.example(at.selectbox(key="editor_example").value)
        w = float(store.head_weights()[0][fid])
    z = dict(zip(ex.features["feature_id"], ex.features["activation"], strict=True)).get(fid, 0.0)
    expected = base + (as_weight(0.5 * float(slider.max)) - w) * z
    assert float(metric(at, "Reward (edited)")) == pytest.approx(expected, abs=1e-6)


FORWARD = Backbone.hidden_states


def forbid_forward(monkeypatch) -> list[int]:
    calls: list[int] = []

    def no_forward(self, batch):
        calls.append(len(batch))
        raise AssertionError("the model ran a forward pass")

    monkeypatch.setattr(Backbone, "hidden_states", no_forward)
    return calls


def test_opening_features_runs_no_forward_pass(store_path, monkeypatch):  # noqa: F811
    calls = forbid_forward(monkeypatch)
    at = start("features")
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    with FeatureStore.open(store_path) as store:
        active = store.features(order_by="frequency", limit=5)["feature_id"].tolist()
    for fid in active:  # never viewed: nothing of theirs is cached anywhere
        at.number_input(key="features_fid").set_value(int(fid)).run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.button(key="features_highlight")  # offered, not run
        at.toggle(key=f"features_quantile_hl_{fid}")  # off for a newly opened feature
        assert not at.toggle(key=f"features_quantile_hl_{fid}").value
    go(at, "overview")
    go(at, "features")
    assert calls == []
    # asked for, the highlights run the model
    monkeypatch.setattr(Backbone, "hidden_states", FORWARD)
    at.button(key="features_highlight").click().run()
    assert not at.exception
    assert [h for h in at.get("html") if "sarm-hl" in h.proto.body]
    assert features.HIGHLIGHTED in at.session_state
