"""Plotly figure builders: pure functions from plain data to figures.

Colours follow the token highlights: orange raises the reward, blue lowers it.
Plotly renders a subset of HTML (links, bold, line breaks) in every text it draws,
so labels, subsets, roles, set names and tokens pass through ``chart_text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.highlight import display_text
from app.text import TRAJECTORY_TITLE, chart_text
from sarm.attribution import TopContributions

UP = "#f58220"
DOWN = "#2d6ee6"
TOTAL = "#555555"
BEFORE = "#8c8c8c"
AFTER = "#f58220"
POOLED = "#d62728"


def feature_name(fid: int, labels: Mapping[int, str] | None = None, width: int = 28) -> str:
    """``f123 · label`` (label shortened), or ``f123``."""
    label = (labels or {}).get(int(fid), "") or ""
    label = label if len(label) <= width else label[: width - 1] + "\u2026"
    return f"f{int(fid)} \u00b7 {label}" if label else f"f{int(fid)}"


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 45, "b": 10},
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def waterfall(
    top: TopContributions,
    labels: Mapping[int, str] | None = None,
    *,
    title: str = "Reward = sum of feature contributions + bias",
    total_name: str = "reward",
) -> go.Figure:
    """Horizontal waterfall: the top contributions, "all other features", the bias, the total.

    The relative bars add up to ``top.total`` exactly (the total bar is that sum).
    """
    names = [chart_text(feature_name(f, labels)) for f, _ in top.top]
    values = [float(c) for _, c in top.top]
    names.append(f"all other features ({top.n_rest})")
    values.append(float(top.rest))
    if top.bias != 0.0:
        names.append("bias")
        values.append(float(top.bias))
    names.append(chart_text(total_name))
    measure = ["relative"] * (len(values)) + ["total"]
    texts = [f"{v:+.4g}" for v in values] + [f"{top.total:.4g}"]
    fig = go.Figure(
        go.Waterfall(
            orientation="h",
            y=names,
            x=[*values, 0.0],
            measure=measure,
            text=texts,
            textposition="outside",
            increasing={"marker": {"color": UP}},
            decreasing={"marker": {"color": DOWN}},
            totals={"marker": {"color": TOTAL}},
            connector={"line": {"color": "rgba(120,120,120,0.4)"}},
            cliponaxis=False,
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, title, height=max(260, 26 * len(names) + 90))


def waterfall_values(fig: go.Figure) -> tuple[list[str], list[float]]:
    """The (names, relative values) of a :func:`waterfall` figure, for checks."""
    trace = fig.data[0]
    rel = [m == "relative" for m in trace.measure]
    return [n for n, r in zip(trace.y, rel, strict=True) if r], [
        float(v) for v, r in zip(trace.x, rel, strict=True) if r
    ]


MAX_TICKS = 60  # token labels on the trajectory's x-axis (every n-th beyond that)
TICK_CHARS = 12


def aligned_zero_ranges(*series: Sequence[float] | np.ndarray, pad: float = 0.06):
    """``(low, high)`` axis ranges, one per series, with zero at the same height on all.

    Each range covers its series and zero; one side of a range is stretched where
    needed so that zero sits at the same fraction of every axis (then ``pad`` of
    the span is added on both sides, which keeps that fraction).
    """
    spans: list[tuple[float, float] | None] = []
    for values in series:
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        neg = float(max(0.0, -arr.min())) if arr.size else 0.0
        pos = float(max(0.0, arr.max())) if arr.size else 0.0
        spans.append((neg, pos) if neg + pos > 0 else None)
    fractions = [n / (n + p) for n, p in (s for s in spans if s is not None)]
    if not fractions:
        return [(-1.0, 1.0) for _ in spans]
    inside = [x for x in fractions if 0.0 < x < 1.0]
    if inside:
        f = max(inside)
    elif len(set(fractions)) == 1:
        f = fractions[0]  # all at or above zero (0), or all at or below it (1)
    else:
        f = 0.5  # some series only positive, others only negative
    out = []
    for span in spans:
        neg, pos = span if span is not None else (f, 1.0 - f)
        if 0.0 < f < 1.0:
            if neg / (neg + pos) < f:
                neg = f * pos / (1.0 - f)
            else:
                pos = neg * (1.0 - f) / f
        total = neg + pos
        out.append((-neg - pad * total, pos + pad * total))
    return out


def token_ticks(tokens: Sequence[str]) -> tuple[list[int], list[str]]:
    """Tick positions and texts for a token axis: every token, or every n-th (and the last)."""
    n = len(tokens)
    every = max(1, -(-n // MAX_TICKS))
    pos = list(range(0, n, every))
    if n and pos[-1] != n - 1:
        pos.append(n - 1)
    texts = []
    for i in pos:
        t = display_text(tokens[i]).replace("\n", "").strip() or "\u2423"
        texts.append(chart_text(t if len(t) <= TICK_CHARS else t[: TICK_CHARS - 1] + "\u2026"))
    return pos, texts


def reward_trajectory(
    tokens: Sequence[str],
    rewards: np.ndarray,
    track: np.ndarray | None = None,
    track_name: str = "activation",
    *,
    title: str = TRAJECTORY_TITLE,
    system_end: int = 0,
) -> go.Figure:
    """``r_t`` over the tokens (the x-axis shows them; hover gives each token's text), a
    feature's activation as bars behind it on a second axis whose zero is aligned with
    the first, the last (pooled) point marked as the reward, and the system prompt
    ``tokens[:system_end]`` shaded."""
    x = np.arange(len(tokens))
    r = np.asarray(rewards, float)
    hover = [chart_text(display_text(t).replace("\n", "") or "\u2423") for t in tokens]
    track_name = chart_text(track_name)
    fig = go.Figure()
    if track is not None:
        fig.add_trace(
            go.Bar(
                x=x,
                y=np.asarray(track, float),
                name=track_name,
                yaxis="y2",
                marker={"color": "rgba(245,130,32,0.45)"},
                hovertext=hover,
                hovertemplate="token %{x}: %{hovertext}<br>z = %{y:.4f}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=r,
            mode="lines",
            name="r_t",
            line={"color": TOTAL, "width": 2},
            hovertext=hover,
            hovertemplate="token %{x}: %{hovertext}<br>r_t = %{y:.4f}<extra></extra>",
        )
    )
    if len(r):
        fig.add_trace(
            go.Scatter(
                x=[x[-1]],
                y=[r[-1]],
                mode="markers+text",
                name="r_T = reward (scored token)",
                marker={"color": POOLED, "size": 11, "symbol": "diamond"},
                text=["reward"],
                textposition="top left",
                hovertext=[hover[-1]],
                hovertemplate="scored token %{x}: %{hovertext}<br>reward r_T = %{y:.4f}"
                "<extra></extra>",
            )
        )
    if system_end > 0:
        fig.add_vrect(
            x0=-0.5,
            x1=system_end - 0.5,
            fillcolor="rgba(128,128,128,0.15)",
            line_width=0,
            annotation_text="system prompt",
            annotation_position="top left",
        )
    ranges = aligned_zero_ranges(r, np.asarray(track, float) if track is not None else r)
    ticks, labels = token_ticks(tokens)
    fig.update_layout(
        xaxis={"title": "token", "tickvals": ticks, "ticktext": labels, "tickangle": -60},
        yaxis={"title": "r_t", "range": list(ranges[0]), "zeroline": True},
        yaxis2={
            "title": track_name,
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "range": list(ranges[1]),
            "zeroline": False,
        },
    )
    fig = _layout(fig, chart_text(title), height=380)
    fig.update_layout(legend={"orientation": "h", "y": -0.45})  # below the slanted token labels
    return fig


def activation_histogram(hist: pd.DataFrame, *, title: str = "Activation histogram") -> go.Figure:
    """Bars of a ``bin, lo, hi, count`` frame over the active examples."""
    centres = (hist["lo"].to_numpy(float) + hist["hi"].to_numpy(float)) / 2
    widths = hist["hi"].to_numpy(float) - hist["lo"].to_numpy(float)
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=hist["count"].to_numpy(),
            width=widths if len(widths) and (widths > 0).all() else None,
            marker={"color": UP},
            name="examples",
            customdata=np.stack([hist["lo"], hist["hi"]], axis=1) if len(hist) else None,
            hovertemplate="[%{customdata[0]:.3g}, %{customdata[1]:.3g}]: %{y}<extra></extra>",
        )
    )
    fig.update_layout(xaxis={"title": "activation z_T"}, yaxis={"title": "examples"}, bargap=0.02)
    return _layout(fig, title, height=300)


def reward_histograms(
    before: np.ndarray, after: np.ndarray | None = None, *, title: str = "Reward distribution"
) -> go.Figure:
    """Overlaid histograms of rewards before (grey) and after (orange) an edit.

    The counts are binned here over shared edges (40 bins, the last one closed), so
    the figure carries 40 bars per trace instead of every reward: the head editor
    redraws it on each slider move.
    """
    values = np.concatenate([before, after]) if after is not None else np.asarray(before)
    edges = np.histogram_bin_edges(values, bins=40)
    fig = go.Figure()
    for name, rewards, color in (("before", before, BEFORE), ("after", after, AFTER)):
        if rewards is None:
            continue
        counts, _ = np.histogram(rewards, bins=edges)
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=counts,
                width=np.diff(edges),
                name=name,
                marker={"color": color},
                opacity=0.6,
                customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                hovertemplate="%{customdata[0]:.4f} to %{customdata[1]:.4f}: %{y}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="overlay", bargap=0, xaxis={"title": "reward"}, yaxis={"title": "responses"}
    )
    return _layout(fig, title, height=320)


def subset_accuracy(
    table: pd.DataFrame, *, title: str = "Pairwise accuracy by subset"
) -> go.Figure:
    """Bars per subset: ``accuracy_before`` (and ``accuracy_after`` when present)."""
    fig = go.Figure()
    has_after = "accuracy_after" in table
    label = "auto" if len(table) * (1 + has_after) <= 12 else "none"
    fig.add_trace(
        go.Bar(
            x=[chart_text(s) for s in table["subset"]],
            y=table["accuracy_before"],
            name="before" if has_after else "accuracy",
            marker={"color": BEFORE if has_after else UP},
            text=[f"{v:.1%}" for v in table["accuracy_before"]],
            textposition=label,
        )
    )
    if has_after:
        fig.add_trace(
            go.Bar(
                x=[chart_text(s) for s in table["subset"]],
                y=table["accuracy_after"],
                name="after",
                marker={"color": AFTER},
                text=[f"{v:.1%}" for v in table["accuracy_after"]],
                textposition=label,
            )
        )
    fig.update_layout(barmode="group", yaxis={"title": "accuracy", "range": [0, 1.05]})
    return _layout(fig, title, height=320)


def rewards_by_group(
    frame: pd.DataFrame, *, title: str = "Rewards by subset and role"
) -> go.Figure:
    """Box plots of ``reward`` per ``subset``, one colour per ``role``."""
    fig = go.Figure()
    colours = {"chosen": UP, "rejected": DOWN, "single": TOTAL}
    for role in sorted(frame["role"].unique()):
        part = frame[frame["role"] == role]
        fig.add_trace(
            go.Box(
                x=[chart_text(s) for s in part["subset"]],
                y=part["reward"],
                name=chart_text(role),
                boxmean=True,
                marker={"color": colours.get(role, TOTAL)},
            )
        )
    fig.update_layout(boxmode="group", yaxis={"title": "reward"})
    return _layout(fig, title, height=360)


def error_features(
    table: pd.DataFrame,
    labels: Mapping[int, str] | None = None,
    n: int = 15,
    *,
    title: str = "Features carrying the misranked margin (summed over errors)",
) -> go.Figure:
    """Horizontal bars of ``margin_sum`` for the ``n`` features with the largest |sum|."""
    part = table.reindex(table["margin_sum"].abs().sort_values(ascending=False).index).head(n)
    names = [chart_text(feature_name(f, labels)) for f in part["feature_id"]]
    vals = part["margin_sum"].to_numpy(float)
    fig = go.Figure(
        go.Bar(
            y=names,
            x=vals,
            orientation="h",
            marker={"color": [UP if v > 0 else DOWN for v in vals]},
            text=[f"{v:+.3g}" for v in vals],
            textposition="auto",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(xaxis={"title": "sum over misranked pairs of w_i (z^c_i - z^r_i)"})
    return _layout(fig, title, height=max(260, 24 * len(names) + 100))


def shift_histograms(
    frame: pd.DataFrame,
    *,
    title: str = "Rewards before and after the shift",
    bins: int = 25,
) -> go.Figure:
    """Overlaid before (grey) / after (orange) reward histograms, one panel per set.

    ``frame`` is ``ShiftReport.distribution_frame()``: columns ``set, stage,
    reward``. Both stages of a set share its bins, so the bars line up.
    """
    sets = list(dict.fromkeys(frame["set"]))
    fig = make_subplots(rows=1, cols=max(len(sets), 1), horizontal_spacing=0.08)
    for col, set_name in enumerate(sets, start=1):
        part = frame[frame["set"] == set_name]
        name = chart_text(set_name)
        edges = np.histogram_bin_edges(part["reward"].to_numpy(float), bins=bins)
        size = float(edges[1] - edges[0]) if len(edges) > 1 and edges[1] > edges[0] else None
        # one bin past the last edge: plotly's bins are [a, a + size), so the maximum gets drawn
        xbins = (
            {"start": float(edges[0]), "end": float(edges[-1]) + size, "size": size}
            if size
            else None
        )
        for stage, colour in (("before", BEFORE), ("after", AFTER)):
            values = part.loc[part["stage"] == stage, "reward"].to_numpy(float)
            fig.add_trace(
                go.Histogram(
                    x=values,
                    name=stage,
                    legendgroup=stage,
                    showlegend=col == 1,
                    marker={"color": colour},
                    opacity=0.6,
                    xbins=xbins,
                    hovertemplate=f"{name} {stage}<br>reward %{{x}}<br>%{{y}} responses<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=f"reward on the {name}", row=1, col=col)
    fig.update_yaxes(title_text="responses", row=1, col=1)
    fig = _layout(fig, title, height=340)
    fig.update_layout(
        barmode="overlay",
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
    return fig


def selectivity_bars(
    mean_abs_delta: Mapping[str, float],
    mean_delta: Mapping[str, float],
    selectivity: float | None,
    *,
    title: str | None = None,
) -> go.Figure:
    """Mean |delta r| (orange) and mean delta r (grey) per set; the title gives their ratio."""
    if title is None:
        ratio = (
            "n/a"
            if selectivity is None
            else "\u221e"
            if np.isinf(selectivity)
            else f"{selectivity:.3g}"
        )
        title = f"Selectivity = mean |\u0394r| target / complement = {ratio}"
    names = list(mean_abs_delta)
    shown = [chart_text(n) for n in names]
    fig = go.Figure()
    for label, data, colour in (
        ("mean |\u0394r|", mean_abs_delta, AFTER),
        ("mean \u0394r", mean_delta, BEFORE),
    ):
        vals = [float(data[n]) for n in names]
        fig.add_trace(
            go.Bar(
                x=shown,
                y=vals,
                name=label,
                marker={"color": colour},
                text=[f"{v:+.3g}" if "|" not in label else f"{v:.3g}" for v in vals],
                textposition="auto",
            )
        )
    fig.update_layout(barmode="group", yaxis={"title": "reward change"})
    return _layout(fig, title, height=340)
