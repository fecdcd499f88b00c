"""Compare a pair: the reward margin decomposed feature by feature, both texts highlighted."""

import streamlit as st

from app import charts, choices, core, state, tables, text, widgets
from app.highlight import value_scale
from sarm.audit import pair_table

INDEXED, TYPED = "Indexed pair", "Type two responses to one prompt"


def render() -> None:
    ctx = state.context()
    st.title("Compare a pair")
    asked = state.requested("compare", "pair")
    if asked is not None:
        state.put("compare_source", INDEXED)
    source = st.radio("Pair", [INDEXED, TYPED], key=state.keep("compare_source"), horizontal=True)
    if source == INDEXED:
        ids = _indexed_pair(ctx, asked)
        expls = [ctx.explain_example(e) for e in ids]
        examples = [ctx.example(e) for e in ids]
        st.caption(text.prompt_caption(examples[0].prompt))
    else:
        state.link("compare")
        scored = _typed_pair(ctx)
        expls = [
            core.explain(s["activations"], ctx.head, ctx.labels(s["activations"])) for s in scored
        ]

    deltas = core.pair_deltas(*expls)
    margin = expls[0].reward - expls[1].reward
    m1, m2, m3 = st.columns(3)
    m1.metric("Reward chosen", f"{expls[0].reward:.6f}")
    m2.metric("Reward rejected", f"{expls[1].reward:.6f}")
    m3.metric("Margin", f"{margin:+.6f}")
    m3.markdown(text.margin_badge(margin))
    widgets.edit_caption(ctx)

    n = st.slider("Features in the waterfall", 3, 40, 12, key="compare_top")
    top, labels = tables.margin_waterfall(deltas, n)
    fig = charts.waterfall(
        top,
        labels,
        title="Margin = sum over features of w_i (z^chosen_i - z^rejected_i)",
        total_name="margin",
    )
    st.plotly_chart(fig, key="compare_waterfall")
    with st.expander(f"All {len(deltas)} features active in either response"):
        st.dataframe(deltas, hide_index=True, key="compare_table")
        widgets.downloads(deltas, "pair_margin_features", "compare_table_dl")

    st.subheader("Both texts, highlighted")
    fid = widgets.feature_choice(deltas, "compare_feature")
    if fid is None:
        return
    name = charts.feature_name(fid, ctx.labels([fid]), 40)
    if source == INDEXED:
        hls = [widgets.stored_tracks(ctx, e, [fid]) for e in ids]
        if any(h is None for h in hls):
            st.stop()
        tokens = [h.tokens for h in hls]
        tracks = [h.feature(fid) for h in hls]
    else:
        tokens = [s["tokens"] for s in scored]
        tracks = [core.feature_track(s["values"], s["indices"], fid) for s in scored]
    scale = value_scale(*tracks)
    widgets.legend(scale, name)
    cols = st.columns(2)
    for col, title, tok, track in zip(cols, ("Chosen", "Rejected"), tokens, tracks, strict=True):
        with col:
            st.markdown(text.track_caption(title, track))
            widgets.highlight(tok, track, scale)
    if st.button("Open this feature", key="compare_open_feature"):
        state.open_feature(fid)


def _indexed_pair(ctx: state.Context, asked: str | None) -> tuple[int, int]:
    """Filters and a picker over the store's pairs; the chosen pair's example ids.

    ``asked``: a pair's URL parameter (a link's or another page's) to select.
    """
    ss = st.session_state
    table = pair_table(ctx.rewards(), ctx.data.index, ctx.data.frame)
    if table.empty:
        state.stop_with(
            "info", "This store has no (chosen, rejected) pairs; type two responses instead."
        )
    asked_ids = _asked_pair(table, asked)
    if "compare_pair" not in ss:  # back on the page: the pair shown last
        ss["compare_pair"] = choices.find_pair(table, ss.get(state.PAIR))
    c1, c2 = st.columns([3, 1])
    subsets = c1.multiselect(
        "Subset", list(ctx.data.subsets), key=state.keep("compare_subsets", [])
    )
    wrong_only = c2.toggle("Misranked only", key=state.keep("compare_wrong", False))
    shown = tables.filter_pairs(table, subsets, wrong_only)
    if shown.empty:
        state.stop_with("info", "No pair matches these filters.")
    options, _ = choices.pair_options(table, shown, asked_ids)
    if ss.get("compare_pair") not in options:
        ss["compare_pair"] = options[0]
    rows = table.set_index("pair")
    pos = st.selectbox(
        "Pair", options, key="compare_pair", format_func=lambda p: text.pair_option(rows.loc[p])
    )
    ids = int(rows.loc[pos, "chosen_id"]), int(rows.loc[pos, "rejected_id"])
    ss[state.PAIR] = ids
    widgets.copy_link(state.link("compare", pair=core.pair_param(*ids)))
    return ids


def _asked_pair(table, asked: str | None) -> tuple[int, int] | None:
    """The pair ``asked`` for: selected, with the filters that hide it cleared. None when
    there is none (or it is not in the store: a warning says so)."""
    if asked is None:
        return None
    try:
        ids = core.parse_pair(asked)
    except ValueError as exc:
        st.warning(text.plain(exc))
        return None
    pair = choices.find_pair(table, ids)
    if pair is None:
        st.warning(f"The link's pair {text.code(asked)} is not a pair of this store.")
        return None
    filters = state.kept("compare_subsets", []), state.kept("compare_wrong", False)
    if pair not in set(tables.filter_pairs(table, *filters)["pair"]):
        state.put("compare_subsets", [])
        state.put("compare_wrong", False)
        st.caption(f"Filters cleared to show pair {text.code(asked)}.")
    st.session_state["compare_pair"] = pair
    return ids


def _typed_pair(ctx: state.Context) -> list[dict]:
    """A typed conversation (system prompt, turns ending with the user's) and two responses
    to it, each scored; stops until there are some."""
    got = widgets.conversation_editor(
        ctx,
        "compare",
        (("prompt", "user"),),
        "user",
        "Compare",
        responses=(("compare_a", "Chosen (A)"), ("compare_b", "Rejected (B)")),
    )
    if got is not None:
        messages, answers = got
        context = tuple((m["role"], m["content"]) for m in messages)
        empty = [label for label, a in zip("AB", answers, strict=True) if not a.strip()]
        if empty:
            st.error(f"Response {' and '.join(empty)} is empty; type both responses.")
        else:
            st.session_state["compare_typed"] = (context, *answers)
    typed = st.session_state.get("compare_typed")
    if not typed:
        state.stop_with(
            "info", "Type a conversation and two responses to its last turn, then press Compare."
        )
    context, *answers = typed
    try:
        return [
            state.score_messages(ctx.sources.model, (*context, ("assistant", a))) for a in answers
        ]
    except ValueError as exc:
        state.stop_with("error", text.problem("Cannot score this text", exc))
