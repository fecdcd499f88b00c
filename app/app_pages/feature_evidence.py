"""The feature page's lead: the shown explanation (score, source, history) and its evidence.

Everything here is read from the store (migration 006 tables and the annotations
database): opening a feature runs no forward pass. All dataset and explanation text
is shown literally (``text.plain`` / ``text.code`` / dataframes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import state, text
from sarm.explain.text import window_line

MAX_WINDOWS = 12


def render_explanation(ctx: state.Context, fid: int) -> None:
    """The explanation a reader sees first (a label, else the best-scoring one of any
    explainer), with its detection and fuzzing scores and its source."""
    shown = state.shown_explanations(ctx.path, ctx.revision())
    row = shown[shown["feature"] == fid]
    if row.empty:
        st.caption("No explanation yet: run `sarm explain --store` on this store.")
        return
    r = row.iloc[0]
    st.markdown(f"**{text.plain(r['text'])}**")
    source = "your label" if r["source"] == "label" else r["source"]
    st.caption(
        f"source: {text.plain(source)} · detection score (balanced accuracy against "
        f"windows of the same source where it is silent, 0.5 = chance): "
        f"{_score(r['score'], 'too few held-out windows')} · fuzzing score (is the highlighted "
        f"token the one that fires, 0.5 = chance): {_score(r.get('fuzzing'), 'not scored')}"
        f" · text ceiling (what a classifier over these windows' tokens reaches on the same "
        f"test: no text explanation of them does much better): "
        f"{_score(r.get('ceiling'), 'not measured: sarm explain --ceiling')}"
    )
    history = ctx.store.explanation_history(fid)
    if len(history):
        with st.expander(f"Explanation history ({len(history)})"):
            st.dataframe(
                history[["text", "source", "version", "score", "monosemanticity", "created_at"]],
                hide_index=True,
            )


def _score(value, missing: str) -> str:
    return f"n/a ({missing})" if value is None or pd.isna(value) else f"{value:.2f}"


def render_evidence(ctx: state.Context, fid: int) -> None:
    """Windows, density, histogram, contrastive tokens, metadata, decoder views, reward link."""
    ev = state.feature_evidence(ctx.path, fid)
    if not ev["density"]:
        st.info("This store holds no token evidence (indexed with --no-evidence or before it).")
        return
    _windows(ev["windows"])
    left, right = st.columns(2)
    with left:
        _density(ev)
        _contrastive(ev["contrastive"])
    with right:
        _metadata(ev["metadata"])
        _reward(ev["reward"])
        _decoder(ev["decoder"], ev["decoder_note"])


def _windows(windows) -> None:
    st.subheader("Where it fires")
    if not windows:
        st.caption("No window of this feature is stored (it never fires at a scored token).")
        return
    st.caption(
        "Strongest first. ⟦peak⟧ marks the feature's strongest token, ⟨…⟩ the scored "
        "end-of-turn token; the system prompt and question are never part of a window."
    )
    for w in windows[:MAX_WINDOWS]:
        st.markdown(text.code(window_line(w)))


def _density(ev: dict) -> None:
    d = ev["density"]
    st.subheader("Density")
    st.caption(
        f"active on {d['active_tokens']:,} of {d['n_tokens']:,} response tokens "
        f"({d['token_fraction']:.3%}) and in {d['active_responses']:,} of "
        f"{d['n_responses']:,} responses ({d['response_fraction']:.1%})"
    )
    hist = ev["histogram"]
    log = st.toggle("Log count axis", key=f"evidence_log_{d['feature_id']}")
    shown = hist[hist["count"] > 0]
    if len(shown):
        labels = [f"{lo:.3g}..{hi:.3g}" for lo, hi in zip(shown["low"], shown["high"], strict=True)]
        counts = shown["count"].to_numpy(float)
        st.bar_chart(
            pd.DataFrame({"tokens": np.log10(counts + 1) if log else counts}, index=labels),
            x_label="activation (log-spaced bins)",
            y_label="log10(tokens + 1)" if log else "tokens",
        )


def _contrastive(frame: pd.DataFrame) -> None:
    st.subheader("Over-represented where active")
    if frame.empty:
        st.caption("No token or bigram stands out against the background sample.")
        return
    st.dataframe(
        frame[["kind", "text", "active_count", "active_total", "background_count", "ratio"]],
        hide_index=True,
    )


def _metadata(frame: pd.DataFrame) -> None:
    st.subheader("Where its activations come from")
    if frame.empty:
        return
    st.caption("s = (c - j) / (c + j + mean): the SARM paper's preference score in each slice")
    st.dataframe(
        frame.rename(columns={"preference_score": "s"}),
        hide_index=True,
        column_config={"share": st.column_config.NumberColumn(format="%.2f")},
    )


def _reward(reward: dict) -> None:
    if not reward:
        return
    st.subheader("Reward link")
    share = reward.get("abs_contribution_share")
    st.caption(
        f"head weight {reward['weight']:+.4f} · mean contribution "
        f"{reward['mean_contribution']:+.5f} · "
        f"{'n/a' if share is None or pd.isna(share) else f'{share:.2%}'} of all |contribution|"
    )


def _decoder(frame: pd.DataFrame, note: str) -> None:
    st.subheader("Decoder direction")
    st.caption(text.plain(note))
    if frame.empty:
        return
    for kind in ("promoted", "suppressed"):
        part = frame[frame["kind"] == kind]
        if len(part):
            tokens = ", ".join(text.code(t) for t in part["text"])
            st.markdown(f"{kind}: {tokens}")
    near = frame[frame["kind"] == "neighbour"]
    if len(near):
        st.caption(
            "nearest features by decoder cosine: "
            + ", ".join(
                f"f{int(n)} ({v:.2f})"
                for n, v in zip(near["neighbour"], near["value"], strict=True)
            )
        )
