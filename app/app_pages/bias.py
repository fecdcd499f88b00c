"""Bias audit: what the reward pays for that it should not, which features pay it, a fix.

The page shows a report written by ``sarm audit-bias --out FILE`` (it needs
forward passes, so the page never computes one): the shipped
``sarm/assets/default/bias_audit.json`` for the default SARM, or the file
named by ``SARM_BIAS_AUDIT``. "Propose fix" opens the before / after view of
the fix the audit proposed from its dev data and judged on its test data;
"Send to head editor" hands the fix's weights to the Head editor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import state, text, widgets
from sarm import cachedir

REPORT_ENV = "SARM_BIAS_AUDIT"
REPORT_FILE = "bias_audit.json"
FIX_KEY = "bias_fix"


def report_path(model: str) -> Path | None:
    """``$SARM_BIAS_AUDIT``, or the shipped report for the default SARM (None: no report)."""
    given = os.environ.get(REPORT_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    if model == "default":
        return cachedir.shipped_default_dir() / REPORT_FILE
    return None


@st.cache_data(show_spinner=False)
def load_report(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())


def _interval(values) -> str:
    return "" if not values else f"[{values[0]:+.3f}, {values[1]:+.3f}]"


def _features(rows, names: Mapping[int, str], limit: int = 3) -> str:
    parts = []
    for f in rows[:limit]:
        name = f.get("explanation") or names.get(int(f["id"]), "")
        share = "" if f.get("share") is None else f" {f['share']:.0%}"
        parts.append(f"#{f['id']}{share}" + (f" {name}" if name else ""))
    return "; ".join(parts)


def property_table(report: Mapping, names: Mapping[int, str]) -> pd.DataFrame:
    """One row per property: the three bias figures and the top paying features."""
    rows = []
    for name, row in report["properties"].items():
        wp = row["within_prompt_effect"]
        carriers = row["counterfactual_top_features"] or row["top_features"]
        rows.append(
            {
                "property": name,
                "reward_corr": row["reward_corr"]["corr"],
                "reward_corr_ci95": _interval(row["reward_corr"]["ci95"]),
                "within_prompt_slope": wp["slope"],
                "within_prompt_ci95": _interval(wp["slope_ci95"]),
                "operator": row["operator"] or "",
                "delta_r_median": row["counterfactual_delta_median"],
                "delta_r_90": _interval(row["counterfactual_delta_interval90"]),
                "paying_features": _features(carriers, names),
                "fix": row["operator"] in report["fixes"],
            }
        )
    return pd.DataFrame(rows)


def before_after(fix: Mapping) -> pd.DataFrame:
    """The fix's figures side by side: bias, accuracy overall and per source / category."""
    b, a = fix["before"], fix["after"]
    rows = [
        (
            "delta-r median",
            f"{fix['operator']} rewrite",
            b["bias"]["median"],
            a["bias"]["median"],
            _interval(b["bias"]["median_ci95"]),
            _interval(a["bias"]["median_ci95"]),
            b["bias"]["n"],
        ),
        (
            "reward_corr",
            fix["property"],
            b["reward_corr"]["corr"],
            a["reward_corr"]["corr"],
            _interval(b["reward_corr"]["ci95"]),
            _interval(a["reward_corr"]["ci95"]),
            b["reward_corr"]["n"],
        ),
    ]
    for op, fig in b["other_biases"].items():
        after = a["other_biases"][op]
        rows.append(
            (
                "delta-r median",
                f"{op} rewrite",
                fig["median"],
                after["median"],
                _interval(fig["median_ci95"]),
                _interval(after["median_ci95"]),
                fig["n"],
            )
        )
    rows.append(
        _accuracy_row("pairwise accuracy", "all", b["pairwise_accuracy"], a["pairwise_accuracy"])
    )
    for key in ("per_source", "per_category"):
        for name, fig in b.get(key, {}).items():
            rows.append(_accuracy_row("pairwise accuracy", name, fig, a[key][name]))
    cols = ["figure", "on", "before", "after", "before_ci95", "after_ci95", "n"]
    return pd.DataFrame(rows, columns=cols)


def _accuracy_row(figure: str, on: str, before: Mapping, after: Mapping) -> tuple:
    return (
        figure,
        on,
        before["accuracy"],
        after["accuracy"],
        _interval(before["ci95"]),
        _interval(after["ci95"]),
        before["n_pairs"],
    )


def fix_weights(weights: np.ndarray, fix: Mapping) -> tuple[np.ndarray, list[int]]:
    """A full weight vector with the fix's new weights, and the features it changes."""
    out = np.array(weights, dtype=np.float32, copy=True)
    ids = []
    for fid, (_, new) in fix["changed_weights"].items():
        out[int(fid)] = new
        ids.append(int(fid))
    return out, ids


def render() -> None:
    ctx = state.context()
    state.link("bias")
    st.title("Bias audit")
    widgets.edit_caption(ctx)
    path = report_path(ctx.sources.model)
    if path is None or not path.is_file():
        st.info(
            "No bias audit for this model yet. Run "
            + text.code("sarm audit-bias --model M --data D --dev-data D2 --out audit.json")
            + f" (it rewrites and rescores responses), then set {text.code(REPORT_ENV)} to the file."
        )
        return
    try:
        report = load_report(str(path), path.stat().st_mtime)
        _page(ctx, report, path)
    except (ValueError, KeyError, TypeError) as exc:
        st.error(text.problem(f"Cannot read the bias audit {path}", exc))


def _page(ctx: state.Context, report: dict, path: Path) -> None:
    st.caption(
        f"{report['n_responses']:,} responses, {report['n_pairs']:,} pairs of "
        f"{text.plain(report.get('data', '?'))}; rewrites: {report.get('pairs_per_operator')} pairs "
        f"per operator, seed {report['seed']}; fixes proposed from "
        f"{text.plain(report.get('dev_data', '?'))}. Report: {text.code(path)}"
    )
    if report.get("head") and report["head"] != ctx.head.base().hash():
        st.warning(
            "The report was computed for another head than the one in use: its figures "
            "describe that head."
        )
    ids = {int(f["id"]) for row in report["properties"].values() for f in row["top_features"]}
    table = property_table(report, ctx.labels(ids))
    st.dataframe(table, hide_index=True, key="bias_table")
    widgets.downloads(table, "bias_audit", "bias_table_dl")
    fixable = [
        row["operator"]
        for row in report["properties"].values()
        if row["operator"] in report["fixes"]
    ]
    if not fixable:
        st.success("The audit found no rewrite that the reward pays for: no fix to propose.")
        return
    c1, c2 = st.columns([2, 1])
    op = c1.selectbox("Bias to fix (rewrite operator)", fixable, key=state.keep("bias_operator"))
    if c2.button("Propose fix", key="bias_propose", type="primary"):
        st.session_state[FIX_KEY] = op
    chosen = st.session_state.get(FIX_KEY)
    if chosen in report["fixes"]:
        _fix_view(ctx, report["fixes"][chosen])


def _fix_view(ctx: state.Context, fix: dict) -> None:
    st.subheader(f"Fix for the {fix['operator']} bias")
    names = ctx.labels(fix["features"])
    feats = ", ".join(f"#{f}" + (f" {names[f]}" if names.get(f) else "") for f in fix["features"])
    st.markdown(
        f"{text.code(fix['intervention'])} on {text.plain(feats)}: the features that carry "
        f"{fix['dev_share']:.0%} of the mean delta-r on the dev data."
    )
    b, a = fix["before"], fix["after"]
    m = st.columns(4)
    m[0].metric("delta-r median before", text.fmt(b["bias"]["median"], "+.4f"))
    m[1].metric("delta-r median after", text.fmt(a["bias"]["median"], "+.4f"))
    m[2].metric("Pairwise accuracy before", text.fmt(b["pairwise_accuracy"]["accuracy"], ".2%"))
    m[3].metric("Pairwise accuracy after", text.fmt(a["pairwise_accuracy"]["accuracy"], ".2%"))
    flips = fix["flipped"]
    st.caption(f"{flips['n']} pairs flipped: {flips['fixed']} fixed, {flips['broken']} broken.")
    st.dataframe(before_after(fix), hide_index=True, key="bias_before_after")
    if st.button(
        "Send to head editor",
        key="bias_send",
        help="Put the fix's weights into the Head editor's edits (then save or export).",
    ):
        weights, ids = fix_weights(ctx.head.weights, fix)
        state.send_to_editor(ctx, weights, ids)
        state.switch_to("editor")
