"""Compare a pair: the reward margin decomposed feature by feature, both texts highlighted."""

import numpy as np
import streamlit as st

from app import charts, core, state, widgets
from sarm.attribution import top_contributions
from sarm.audit import pair_table
from app.highlight import legend_html, value_scale

ctx = state.context()
st.title("Compare a pair")
source = st.radio(
    "Pair",
    ["Indexed pair", "Type two responses to one prompt"],
    key="compare_source",
    horizontal=True,
)

if source == "Indexed pair":
    table = pair_table(ctx.rewards(), ctx.data.index, ctx.data.frame)
    if table.empty:
        st.info("This store has no (chosen, rejected) pairs; type two responses instead.")
        st.stop()
    c1, c2 = st.columns([3, 1])
    subsets = c1.multiselect("Subset", list(ctx.data.subsets), key="compare_subsets")
    wrong_only = c2.toggle("Misranked only", key="compare_wrong")
    shown = table[table["subset"].isin(subsets)] if subsets else table
    shown = shown[~shown["correct"]] if wrong_only else shown
    if shown.empty:
        st.info("No pair matches these filters.")
        st.stop()
    options = shown["pair"].head(widgets.MAX_OPTIONS).astype(int).tolist()
    wanted = st.session_state.get(state.PAIR)
    if wanted is not None:
        hit = table[(table["chosen_id"] == wanted[0]) & (table["rejected_id"] == wanted[1])]
        if len(hit) and int(hit["pair"].iloc[0]) not in options:
            options.insert(0, int(hit["pair"].iloc[0]))
        if len(hit) and st.session_state.get("compare_pair_wanted") != wanted:
            st.session_state["compare_pair"] = int(hit["pair"].iloc[0])
            st.session_state["compare_pair_wanted"] = wanted
    if st.session_state.get("compare_pair") not in options:
        st.session_state["compare_pair"] = options[0]
    rows = table.set_index("pair")
    pos = st.selectbox(
        "Pair",
        options,
        key="compare_pair",
        format_func=lambda p: (
            f"{rows.loc[p, 'group_id']} \u00b7 {rows.loc[p, 'subset']} \u00b7 "
            f"#{rows.loc[p, 'chosen_id']} vs #{rows.loc[p, 'rejected_id']} \u00b7 "
            f"margin {rows.loc[p, 'margin']:+.4f}{'' if rows.loc[p, 'correct'] else '  (misranked)'}"
        ),
    )
    ids = int(rows.loc[pos, "chosen_id"]), int(rows.loc[pos, "rejected_id"])
    st.session_state[state.PAIR] = ids
    expls = [ctx.explain_example(e) for e in ids]
    examples = [ctx.example(e) for e in ids]
    st.caption(f"Prompt: {core.short(examples[0].prompt, 300)}")
else:
    with st.form("compare_typed_form"):
        prompt = st.text_area("Prompt", key="compare_prompt", height=80)
        c1, c2 = st.columns(2)
        first = c1.text_area("Chosen (A)", key="compare_a", height=120)
        second = c2.text_area("Rejected (B)", key="compare_b", height=120)
        submitted = st.form_submit_button("Compare", type="primary")
    if submitted:
        st.session_state["compare_typed"] = (prompt, first, second)
    typed = st.session_state.get("compare_typed")
    if not typed:
        st.info("Type a prompt and two responses, then press Compare.")
        st.stop()
    try:
        scored = [state.score_text(ctx.sources.model, typed[0], r) for r in typed[1:]]
    except ValueError as exc:
        st.error(f"Cannot score this text: {exc}")
        st.stop()
    expls = [
        core.explain(s["activations"], ctx.weights, ctx.bias, ctx.labels(s["activations"]))
        for s in scored
    ]

deltas = core.pair_deltas(*expls)
margin = expls[0].reward - expls[1].reward
m1, m2, m3 = st.columns(3)
m1.metric("Reward chosen", f"{expls[0].reward:.6f}")
m2.metric("Reward rejected", f"{expls[1].reward:.6f}")
m3.metric("Margin", f"{margin:+.6f}", delta="ranked right" if margin > 0 else "misranked",
          delta_color="normal" if margin > 0 else "inverse")  # fmt: skip
widgets.edit_caption(ctx)

n = st.slider("Features in the waterfall", 3, 40, 12, key="compare_top")
top = top_contributions(dict(zip(deltas["feature_id"], deltas["delta"], strict=True)), n, 0.0)
labels = dict(zip(deltas["feature_id"], deltas["label"], strict=True))
fig = charts.waterfall(
    top,
    labels,
    title="Margin = sum over features of w_i (z^chosen_i - z^rejected_i)",
    total_name="margin",
)
st.plotly_chart(fig, key="compare_waterfall")
with st.expander(f"All {len(deltas)} features active in either response"):
    st.dataframe(deltas, hide_index=True, key="compare_table")

st.subheader("Both texts, highlighted")
fid = widgets.feature_choice(deltas, "compare_feature")
if fid is not None:
    name = charts.feature_name(fid, ctx.labels([fid]), 40)
    if source == "Indexed pair":
        hls = [widgets.stored_tracks(ctx, e, [fid]) for e in ids]
        if any(h is None for h in hls):
            st.stop()
        tokens = [h.tokens for h in hls]
        tracks = [h.feature(fid) for h in hls]
    else:
        tokens = [s["tokens"] for s in scored]
        tracks = [core.feature_track(s["values"], s["indices"], fid) for s in scored]
    scale = value_scale(*tracks)
    st.html(legend_html(scale, f"activation of {name}"))
    cols = st.columns(2)
    for col, title, tok, track in zip(cols, ("Chosen", "Rejected"), tokens, tracks, strict=True):
        with col:
            peak = float(np.max(np.abs(track))) if len(track) else 0.0
            st.markdown(
                f"**{title}** \u00b7 pooled z = {track[-1]:.4f} \u00b7 peak |z| = {peak:.4f}"
            )
            widgets.highlight(tok, track, scale)
    if st.button("Open this feature", key="compare_open_feature"):
        state.open_feature(fid)
