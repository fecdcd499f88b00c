"""Explain a score: reward = waterfall of feature contributions + bias; token highlights; r_t."""

import streamlit as st

from app import charts, core, state, text, widgets

INDEXED, TYPED = "Indexed example", "Type a prompt and response"
TRUNCATED = (
    "Truncated: the conversation was longer than the model's context, so tokens were "
    "removed from the middle of the response (and from the middle of the prompt when the "
    "prompt alone was too long). The end of the question, the turn markers and the final "
    "end-of-turn token were kept."
)


def render() -> None:
    ctx = state.context()
    st.title("Explain a score")
    asked = _asked_example(ctx)
    source = st.radio(
        "Response", [INDEXED, TYPED], key=state.keep("explain_source"), horizontal=True
    )
    if source == INDEXED:
        eid = widgets.example_picker(ctx, "explain", ctx.rewards(), asked)
        widgets.copy_link(state.link("explain", example=eid))
        ex = ctx.example(eid)
        expl = ctx.explain_example(eid)
        st.caption(text.example_caption(ex))
        if ex.truncated:
            st.caption(text.plain(TRUNCATED))
        widgets.conversation_text(ex)
    else:
        state.link("explain")
        scored = _typed(ctx)
        expl = core.explain(scored["activations"], ctx.head, ctx.labels(scored["activations"]))
        if scored["truncated"]:
            st.warning(text.plain(TRUNCATED))

    error = core.error_contribution(expl, ctx.store.error_feature)
    cols = st.columns(4 if error is not None else 3)
    cols[0].metric("Reward", f"{expl.reward:.6f}")
    cols[1].metric("Active features", len(expl.table))
    cols[2].metric("Bias", f"{expl.bias:.4f}")
    if error is not None:
        cols[3].metric("SAE error term", f"{error:+.4f}", help=text.ERROR_HELP)
    widgets.edit_caption(ctx)
    widgets.explanation(ctx, expl, "explain")

    st.subheader("Token by token")
    fid = widgets.feature_choice(expl.table, "explain_feature")
    if fid is None:
        return
    name = charts.feature_name(fid, ctx.labels([fid]), 40)
    if source == INDEXED:
        hl = widgets.stored_tracks(ctx, eid, [fid])
        if hl is not None:
            r_t, note = widgets.stored_trajectory(ctx, eid, hl)
            widgets.token_view(hl.tokens, hl.feature(fid), r_t, name, "explain")
            if note:
                st.caption(note)
    else:
        track = core.feature_track(scored["values"], scored["indices"], fid)
        r_t = core.trajectory(scored["values"], scored["indices"], ctx.head)
        widgets.token_view(scored["tokens"], track, r_t, name, "explain")
    b1, b2 = st.columns(2)
    if b1.button("Open this feature", key="explain_open_feature"):
        state.open_feature(fid)
    if b2.button("Edit its weight in the head editor", key="explain_to_editor"):
        state.open_in_editor([fid])


def _asked_example(ctx: state.Context) -> int | None:
    """An example asked for by a link or another page (None, with a warning, when unknown)."""
    asked = state.requested("explain", "example")
    if asked is None:
        return None
    try:
        eid = core.link_id(asked, "example id")
        ctx.data.row(eid)
    except (ValueError, LookupError) as exc:
        st.warning(text.plain(exc))
        return None
    state.put("explain_source", INDEXED)
    return eid


def _typed(ctx: state.Context) -> dict:
    """The typed conversation (system prompt, turns ending with the response), scored
    (``state.score_messages``); stops until there is one."""
    got = widgets.conversation_editor(
        ctx, "explain", (("prompt", "user"), ("response", "assistant")), "assistant", "Score"
    )
    if got is not None:
        st.session_state["explain_typed"] = tuple((m["role"], m["content"]) for m in got[0])
    typed = st.session_state.get("explain_typed")
    if not typed:
        state.stop_with(
            "info", "Type a conversation (its last turn is the response scored), then press Score."
        )
    try:
        return state.score_messages(ctx.sources.model, typed)
    except ValueError as exc:
        state.stop_with("error", text.problem("Cannot score this text", exc))
