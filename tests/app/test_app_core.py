"""The dashboard's plain-data helpers, figure builders and token highlights (no Streamlit)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest

from app import charts, core
from app.highlight import highlight_html, legend_html, token_color, token_spans, value_scale
from sarm.attribution import top_contributions
from sarm.head import Head

# --------------------------------------------------------------------------- sources


def test_model_ref_validation(tmp_path):
    assert core.check_model_ref(" smollm2-demo ") == "smollm2-demo"
    with pytest.raises(ValueError, match="neither"):
        core.check_model_ref(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a SARM checkpoint"):
        core.check_model_ref(str(tmp_path))
    (tmp_path / "sarm.json").write_text("{}")
    assert core.check_model_ref(str(tmp_path)) == str(tmp_path.resolve())
    for bad in ("", "  ", "a\x00b"):
        with pytest.raises(ValueError):
            core.check_model_ref(bad)


def test_store_path_validation(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        core.check_store_path(str(tmp_path))
    with pytest.raises(ValueError, match="no feature store"):
        core.check_store_path(str(tmp_path / "x.duckdb"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="does not look like"):
        core.check_store_path(str(tmp_path / "notes.txt"))
    (tmp_path / "s.duckdb").write_bytes(b"")
    assert core.check_store_path(str(tmp_path / "s.duckdb")) == str(
        (tmp_path / "s.duckdb").resolve()
    )


def test_env_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("SARM_CACHE_DIR", str(tmp_path))
    sources, overridden = core.env_sources({})
    assert sources == core.Sources("default", str(tmp_path / "default" / "store.duckdb"))
    assert not overridden and sources.is_builtin
    sources, overridden = core.env_sources({"SARM_MODEL": "smollm2-demo"})
    assert sources == core.Sources("smollm2-demo", str(tmp_path / "demo" / "store.duckdb"))
    assert overridden and sources.is_builtin
    sources, overridden = core.env_sources({"SARM_STORE": "/x/s.duckdb"})
    assert sources == core.Sources("default", "/x/s.duckdb") and overridden


# --------------------------------------------------------------------------- explanations


def test_explain_sums_to_reward_and_sorts_by_magnitude():
    weights = np.array([0.5, -2.0, 1.0, 3.0])
    expl = core.explain({0: 2.0, 1: 0.25, 3: -1.0}, Head(weights, 0.125), labels={3: "three"})
    assert expl.table["feature_id"].tolist() == [3, 0, 1]
    assert expl.table["contribution"].tolist() == [-3.0, 1.0, -0.5]
    assert expl.table["label"].tolist() == ["three", "", ""]
    assert expl.reward == pytest.approx(-3.0 + 1.0 - 0.5 + 0.125)
    top = expl.top(1)
    assert top.top == [(3, -3.0)] and top.rest == 0.5 and top.n_rest == 2
    assert top.total == pytest.approx(expl.reward)


def test_pair_deltas_sum_to_margin():
    w = np.array([1.0, -1.0, 2.0, 0.5])
    a = core.explain({0: 1.0, 2: 0.5}, Head(w, 0.3))
    b = core.explain({0: 0.25, 3: 2.0}, Head(w, 0.3), labels={3: "x"})
    deltas = core.pair_deltas(a, b)
    ref = {0: 1.0 - 0.25, 2: 1.0, 3: -1.0}
    assert dict(zip(deltas["feature_id"], deltas["delta"], strict=True)) == ref
    assert deltas["delta"].sum() == pytest.approx(a.reward - b.reward)
    assert deltas.set_index("feature_id").loc[3, "label"] == "x"


def test_tracks_and_trajectories_match_dense_reference():
    rng = np.random.default_rng(0)
    T, k, m = 7, 3, 10
    indices = np.stack([rng.choice(m, k, replace=False) for _ in range(T)])
    values = rng.normal(size=(T, k)).astype(np.float32)
    dense = np.zeros((T, m))
    for t in range(T):
        dense[t, indices[t]] = values[t]
    w = rng.normal(size=m).astype(np.float32)  # a stored head is float32
    np.testing.assert_allclose(core.feature_track(values, indices, 4), dense[:, 4], rtol=1e-6)
    r = core.trajectory(values, indices, Head(w, 0.5))
    np.testing.assert_allclose(r, dense @ w + 0.5, rtol=1e-6)
    w2 = w.astype(np.float64)
    w2[[1, 4]] += [0.3, -2.0]
    adjusted = core.adjust_trajectory(r, dense[:, [1, 4]], [0.3, -2.0])
    np.testing.assert_allclose(adjusted, dense @ w2 + 0.5, rtol=1e-6)


def test_slider_range_covers_zero_base_and_current():
    cases = [(0.3, 0.3, 1.0), (-2.4, 5.0, 0.1), (0.0, 0.0, 0.0), (1e-5, 0, 3), (2.0939, 2.0939, 3)]
    for base, current, scale in cases:
        lo, hi, step = core.slider_range(base, current, scale)
        assert lo <= min(base, current, 0) and hi >= max(base, current, 0)
        half = step * 500  # the round number the range is built on
        mantissa = half / 10 ** np.floor(np.log10(half))
        assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-9
        assert -half - step < lo <= -half + 1e-12 and half - 1e-12 <= hi < half + step
        assert half >= 2 * abs(base)
        # the base is on the slider's grid lo + k * step
        k = (base - lo) / step
        assert k == pytest.approx(round(k), abs=1e-6)
    assert core.slider_range(0.3, 0.3, 1.0)[2] == 1.0 / 500  # a round range, a round step


def test_one_slider_step_from_the_base_is_base_plus_or_minus_step():
    """A key press moves a slider to the neighbouring grid point ``lo + k * step``."""
    base = 2.0939
    lo, _hi, step = core.slider_range(base, base, 3.0)
    assert step == pytest.approx(0.01)
    k = round((base - lo) / step)
    assert lo + (k + 1) * step == pytest.approx(base + step, abs=1e-9)  # 2.1039, not 2.10
    assert lo + (k - 1) * step == pytest.approx(base - step, abs=1e-9)  # 2.0839, not 2.08


def test_filter_examples():
    frame = pd.DataFrame(
        {
            "example_id": [0, 1, 2, 3],
            "role": ["chosen", "rejected", "chosen", "single"],
            "subset": ["a", "a", None, "b"],
        }
    )
    rewards = np.array([1.0, -1.0, 0.5, 2.0])
    out = core.filter_examples(frame, rewards, subsets=["a"], reward_range=(0.0, 5.0))
    assert out["example_id"].tolist() == [0]
    out = core.filter_examples(frame, rewards, subsets=["(none)"])
    assert out["example_id"].tolist() == [2] and out["reward"].tolist() == [0.5]
    out = core.filter_examples(
        frame, rewards, roles=["chosen", "single"], example_ids=np.array([2, 3])
    )
    assert out["example_id"].tolist() == [2, 3]
    assert core.short("a\n  b " * 40, 10) == "a b a b a\u2026"


# --------------------------------------------------------------------------- charts


def test_waterfall_bars_sum_to_the_reward():
    contrib = {1: 0.5, 2: -1.25, 3: 0.125, 4: 2.0, 5: -0.0625}
    top = top_contributions(contrib, n=2, bias=0.75)
    fig = charts.waterfall(top, {4: "long " * 20})
    names, values = charts.waterfall_values(fig)
    assert names[0].startswith("f4 \u00b7 long") and len(names[0]) < 40
    assert names[1:] == ["f2", "all other features (3)", "bias"]
    assert sum(values) == pytest.approx(sum(contrib.values()) + 0.75)
    assert list(fig.data[0].measure)[-1] == "total" and fig.data[0].y[-1] == "reward"


def test_other_figures_carry_the_data():
    hist = pd.DataFrame({"bin": [0, 1], "lo": [0.0, 1.0], "hi": [1.0, 2.0], "count": [3, 5]})
    fig = charts.activation_histogram(hist)
    assert list(fig.data[0].y) == [3, 5] and list(fig.data[0].x) == [0.5, 1.5]
    fig = charts.reward_histograms(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    assert [t.name for t in fig.data] == ["before", "after"] and fig.layout.barmode == "overlay"
    # counted in 40 equal bins over [0, 3]; the maximum falls in the last (closed) bin
    assert sum(fig.data[0].y) == 2 and sum(fig.data[1].y) == 2
    assert fig.data[0].y[0] == 1 and fig.data[1].y[-1] == 1 and len(fig.data[1].y) == 40
    assert fig.data[0].x[0] == pytest.approx(3 / 80) and fig.data[1].x[-1] == pytest.approx(
        3 - 3 / 80
    )
    rng = np.random.default_rng(0)
    before, after = rng.normal(size=500), rng.normal(1.0, 2.0, size=700)
    fig = charts.reward_histograms(before, after)
    lo, hi = min(before.min(), after.min()), max(before.max(), after.max())
    for trace, rewards in zip(fig.data, (before, after), strict=True):
        for x, width, count in zip(trace.x, trace.width, trace.y, strict=True):
            left, right = x - width / 2, x + width / 2
            closed = right >= hi - 1e-12
            inside = (rewards >= left - 1e-12) & (
                (rewards <= right + 1e-12) if closed else (rewards < right - 1e-12)
            )
            assert count == int(inside.sum()), (left, right)
        assert trace.x[0] - trace.width[0] / 2 == pytest.approx(lo)
    table = pd.DataFrame({"subset": ["a"], "accuracy_before": [0.5], "accuracy_after": [0.75]})
    assert [list(t.y) for t in charts.subset_accuracy(table).data] == [[0.5], [0.75]]
    fig = charts.reward_trajectory(["a", "\n"], np.array([0.1, 0.2]), np.array([0.0, 1.0]))
    assert list(fig.data[1].y) == [0.1, 0.2] and list(fig.data[0].y) == [0.0, 1.0]
    errors = pd.DataFrame({"feature_id": [1, 2, 3], "margin_sum": [-0.5, 2.0, 0.1]})
    fig = charts.error_features(errors, n=2)
    assert list(fig.data[0].y) == ["f2", "f1"] and list(fig.data[0].x) == [2.0, -0.5]
    frame = pd.DataFrame(
        {"subset": ["a", "a"], "role": ["chosen", "rejected"], "reward": [1.0, 2.0]}
    )
    assert [t.name for t in charts.rewards_by_group(frame).data] == ["chosen", "rejected"]


# --------------------------------------------------------------------------- highlights


def test_highlight_escapes_every_token():
    tokens = ["<script>", "alert('x')", "</script>", " & ", "\n", '"q"', "<|im_end|>"]
    values = [1.0, -0.5, 0.0, 2.0, 0.1, 0.0, 0.3]
    out = highlight_html(tokens, values, title="<b>t</b>")
    assert "<script>" not in out and "</script>" not in out and "<b>t</b>" not in out
    assert "&lt;script&gt;" in out and "&amp;" in out and "alert(&#x27;x&#x27;)" in out
    assert "&lt;|im_end|&gt;" in out and "\u21b5\n" in out
    spans = re.findall(r'<span class="sarm-tok"[^>]*>(.*?)</span>', out, flags=re.S)
    assert [html.unescape(s) for s in spans] == [
        "<script>",
        "alert('x')",
        "</script>",
        " & ",
        "\u21b5\n",
        '"q"',
        "<|im_end|>",
    ]
    titles = re.findall(r'title="([^"]*)"', out)
    assert titles == ["+1", "-0.5", "+0", "+2", "+0.1", "+0", "+0.3"]


def test_colours_follow_sign_and_scale():
    assert token_color(0.0, 1.0) == "rgba(0,0,0,0)"
    assert token_color(1.0, 2.0) == "rgba(245,130,32,0.425)"
    assert token_color(-4.0, 2.0) == "rgba(45,110,230,0.850)"
    assert token_color(float("nan"), 1.0) == "rgba(0,0,0,0)"
    assert value_scale([0.5, -3.0], [np.nan, 1.0]) == 3.0 and value_scale([]) == 1.0
    spans = token_spans(["a", "b"], [1.0, -1.0], scale=4.0)
    assert [s.color for s in spans] == ["rgba(245,130,32,0.212)", "rgba(45,110,230,0.212)"]
    with pytest.raises(ValueError, match="one value per token"):
        token_spans(["a"], [1.0, 2.0])
    assert "<script" not in legend_html(1.0, "<script>")


def test_reward_range_follows_moving_bounds():
    assert core.reward_range_value(None, None, (0.0, 1.0)) == (0.0, 1.0)
    assert core.reward_range_value((0.0, 1.0), (0.0, 1.0), (2.0, 3.0)) == (
        2.0,
        3.0,
    )  # full: follows
    assert core.reward_range_value((0.2, 0.8), (0.0, 1.0), (0.5, 3.0)) == (
        0.5,
        0.8,
    )  # narrowed: clipped
    assert core.reward_range_value((0.2, 0.8), (0.0, 1.0), (2.0, 3.0)) == (2.0, 3.0)  # nothing left


def test_heldout_frame_lists_categories_then_the_macro_row():
    cell = {"accuracy": 0.625, "n_pairs": 8, "n_prompts": 4, "ci95": [0.5, 0.75]}
    other = {"accuracy": 0.25, "n_pairs": 4, "n_prompts": 2, "ci95": [0.0, 0.5]}
    summary = {"per_category": {"code": cell, "safety": other}, "category_macro": 0.4375}
    frame = core.heldout_frame({"test": {"sarm": summary, "dense": summary}}, "test")
    assert frame["category"].tolist() == ["code", "safety", "macro (each category once)"]
    assert frame["pairs"].tolist() == [8, 4, 12]
    assert frame["sarm"].tolist() == ["62.5% [50.0%, 75.0%]", "25.0% [0.0%, 50.0%]", "43.8%"]
    assert core.heldout_frame({}, "test").empty


def test_heldout_sets_frame_reads_every_set_and_the_error_share():
    import json

    from sarm.cachedir import shipped_default_dir

    manifest = json.loads((shipped_default_dir() / "manifest.json").read_text())
    frame = core.heldout_sets_frame(manifest)
    assert list(frame["set"]) == list(manifest["heldout"])
    row = frame.set_index("set").loc["test"]
    acc = manifest["heldout"]["test"]["sarm"]["all"]["accuracy"]
    assert row["sarm"].startswith(f"{acc:.1%}")
    share = manifest["error_head"]["per_set"]["test"]["error_share"]["sarm"]
    assert row["SAE error share"] == f"{share:.1%}"
    assert "dense probe" in core.head_kind(manifest) or "jointly" in core.head_kind(manifest)
    assert core.head_kind({}) == "alone"
