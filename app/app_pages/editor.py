"""Head editor: move feature weights, watch the example and the whole store respond live."""

import time

import streamlit as st

from app import charts, choices, core, state, tables, text, widgets
from feature_store import StoreError
from sarm.audit import preview_edit
from sarm.constants import INGEST_HEAD
from sarm.head import Head

INTRO = (
    "Change the head's weight of any feature. The rewards of every stored response are "
    "recomputed from the store's cached sparse latents (the model is not run), so the "
    "metrics below follow the sliders."
)


def render() -> None:
    ctx = state.context()
    st.title("Head editor")
    st.caption(INTRO)
    _asked_head(ctx)
    _base_version(ctx)
    widgets.copy_link(state.link("editor", head=ctx.head.name))
    st.caption("The example list shows and filters rewards under the base head.")
    eid = widgets.example_picker(ctx, "editor", ctx.base_rewards())
    _add_features(ctx, ctx.explain_example(eid))
    live(ctx, eid)
    _save(ctx)


@st.fragment
def live(ctx: state.Context, eid: int) -> None:
    """The sliders and everything they change: a slider move reruns only this part.

    In such a partial rerun ``ctx`` is the last full run's; the head is read
    again from the session (the slider callbacks have just changed it).
    """
    ctx = state.refreshed(ctx)
    state.sidebar_head(ctx)  # a fragment may write to the sidebar: redrawn on each slider move
    expl = ctx.explain_example(eid)
    _sliders(ctx, expl)
    _results(ctx, eid, expl)


# ---------------------------------------------------------------- callbacks


def weight_key(fid: int) -> str:
    return f"editor_w_{fid}"


def sync(fid: int, base: Head) -> None:
    """Slider moved: the edit takes its value (``Head.edit`` rounds it, or drops it at base)."""
    ss = st.session_state
    edited = base.edit(ss[state.OVERRIDES]).edit({fid: ss[weight_key(fid)]})
    state.set_overrides(edited.overrides)


def set_weight(fid: int, value: float, base: Head) -> None:
    st.session_state[weight_key(fid)] = float(value)
    sync(fid, base)


def remove(fid: int) -> None:
    ss = st.session_state
    ss[state.EDITOR_FEATURES] = [f for f in ss[state.EDITOR_FEATURES] if f != fid]
    ss.pop(weight_key(fid), None)
    overrides = dict(ss[state.OVERRIDES])
    overrides.pop(fid, None)
    state.set_overrides(overrides)


def clear_sliders() -> None:
    """Forget every slider's value (they show the base weights again)."""
    ss = st.session_state
    for key in [k for k in ss if str(k).startswith("editor_w_")]:
        del ss[key]


def change_base() -> None:
    st.session_state[state.HEAD_BASE] = st.session_state["editor_base"]
    state.set_overrides({})
    clear_sliders()


def add_id() -> None:
    state.add_editor_features([int(st.session_state["editor_add_id"])])


# ---------------------------------------------------------------- sections


def _asked_head(ctx: state.Context) -> None:
    """A head version asked for by a link (``?head=NAME``) becomes the base (edits discarded)."""
    asked = state.requested("editor", "head")
    if asked is None or asked == ctx.head.name:
        return
    names = choices.base_versions(ctx.store.head_versions()["name"].tolist(), INGEST_HEAD)
    if asked not in names:
        st.warning(f"The link's head version {text.code(asked)} is not in this store.")
        return
    st.session_state[state.HEAD_BASE] = asked
    state.set_overrides({})
    clear_sliders()
    st.rerun()


def _base_version(ctx: state.Context) -> None:
    versions = ctx.store.head_versions()
    names = choices.base_versions(versions["name"].tolist(), ctx.head.name)
    st.session_state["editor_base"] = ctx.head.name
    st.selectbox(
        "Base head version (switching discards unsaved edits)",
        names,
        key="editor_base",
        on_change=change_base,
    )


def _add_features(ctx: state.Context, expl: core.Explanation) -> None:
    """Add features to edit: by id, this example's top contributors, or by label."""
    with st.container(border=True):
        a, b, c = st.columns([2, 2, 3])
        a.number_input("Feature id", 0, ctx.model.d_sae - 1, 0, step=1, key="editor_add_id")
        a.button("Add feature", key="editor_add", on_click=add_id)
        b.write("")
        b.button(
            "Add this example's top 5 contributors",
            key="editor_add_top",
            on_click=state.add_editor_features,
            args=(choices.top_features(expl.table, 5),),
        )
        query = c.text_input("Search labels", key=state.keep("editor_label_q")).strip()
        if not query:
            return
        try:
            hits = ctx.store.search_labels(query, limit=50)
        except (ValueError, StoreError) as exc:
            c.error(text.plain(exc))
            return
        if hits.empty:
            c.caption("No label matches.")
            return
        hit_labels = dict(zip(hits["feature_id"], hits["label"], strict=True))
        pick = c.multiselect(
            "Matching features",
            list(hit_labels),
            key="editor_label_pick",
            format_func=lambda f: charts.feature_name(f, hit_labels, 40),
        )
        c.button(
            "Add these", key="editor_add_label", on_click=state.add_editor_features, args=(pick,)
        )


def _sliders(ctx: state.Context, expl: core.Explanation) -> None:
    """One weight slider per listed or changed feature, with zero, reset and remove buttons."""
    ss = st.session_state
    features = choices.editor_features(ss[state.EDITOR_FEATURES], ctx.head.overrides)
    if not features:
        st.info("Add features to edit: by id, from this example's top contributors, or by label.")
    scale = choices.weight_scale(ctx.head.weight)
    labels = ctx.labels(features)
    acts = dict(zip(expl.table["feature_id"], expl.table["activation"], strict=True))
    for fid in features:
        base = float(ctx.head.weight[fid])
        current = float(ctx.head.overrides.get(fid, base))
        lo, hi, step = core.slider_range(base, current, scale)
        if weight_key(fid) not in ss:
            ss[weight_key(fid)] = current
        cols = st.columns([3, 5, 1, 1, 1], vertical_alignment="bottom")
        cols[0].markdown(
            text.editor_feature(charts.feature_name(fid, labels, 36), base, acts.get(fid, 0.0))
        )
        cols[1].slider(
            f"weight of f{fid}",
            lo,
            hi,
            step=step,
            format="%.4f",
            key=weight_key(fid),
            on_change=sync,
            args=(fid, ctx.head.base()),
            label_visibility="collapsed",
        )
        cols[1].caption(text.slider_caption(base, step))
        cols[2].button(
            "0",
            key=f"editor_zero_{fid}",
            on_click=set_weight,
            args=(fid, 0.0, ctx.head.base()),
            help="set to zero",
        )
        cols[3].button(
            "\u21ba",
            key=f"editor_reset_{fid}",
            on_click=set_weight,
            args=(fid, base, ctx.head.base()),
            help="reset to base",
        )
        cols[4].button(
            "\u2715", key=f"editor_remove_{fid}", on_click=remove, args=(fid,), help="remove"
        )


def _results(ctx: state.Context, eid: int, expl: core.Explanation) -> None:
    """The example's and the whole store's numbers under the edit."""
    edited = bool(ctx.head.overrides)
    start = time.perf_counter()
    preview = preview_edit(ctx.head, ctx.data.latents, ctx.data.index)
    ms = (time.perf_counter() - start) * 1000
    row = ctx.data.row(eid)
    before_r, after_r = preview.rewards_before[row], preview.rewards_after[row]
    st.subheader("This example")
    m = st.columns(3)
    m[0].metric("Reward (base head)", f"{before_r:.6f}")
    m[1].metric(
        "Reward (edited)", f"{after_r:.6f}", delta=f"{after_r - before_r:+.6f}" if edited else None
    )
    m[2].metric("Changed weights", len(ctx.head.overrides))
    with st.expander("Waterfall under the edited head", expanded=edited):
        widgets.explanation(ctx, expl, "editor")

    st.subheader("The whole store")
    before, after = preview.before, preview.after
    change = (
        after.pairwise_accuracy - before.pairwise_accuracy
        if after.pairwise_accuracy is not None and edited
        else None
    )
    m = st.columns(4)
    m[0].metric("Pairwise accuracy (base)", text.fmt(before.pairwise_accuracy, ".2%"))
    m[1].metric(
        "Pairwise accuracy (edited)",
        text.fmt(after.pairwise_accuracy, ".2%"),
        delta=text.points(change),
    )
    m[2].metric("Flipped pairs", len(preview.flipped))
    m[3].metric("Recomputed in", f"{ms:.1f} ms")
    left, right = st.columns(2)
    table = preview.per_subset()
    with left:
        if not table.empty:
            st.plotly_chart(charts.subset_accuracy(table), key="editor_subset_chart")
    with right:
        st.plotly_chart(
            charts.reward_histograms(preview.rewards_before, preview.rewards_after),
            key="editor_hist",
        )
    st.dataframe(table, hide_index=True, key="editor_subset_table")

    st.subheader("Pairs whose ranking flipped")
    flipped = preview.flipped_table(ctx.data.index, ctx.data.frame)
    if flipped.empty:
        st.caption("None.")
    else:
        widgets.pair_table(
            widgets.with_pair_texts(ctx, flipped),
            "editor_flipped",
            "Open a flipped pair",
            text.flipped_pair,
            "flipped_pairs",
        )


def _save(ctx: state.Context) -> None:
    """Save the edited head as a new version, which becomes the base (with its metrics)."""
    ss = st.session_state
    st.subheader("Save as a head version")
    with st.form("editor_save_form"):
        name = st.text_input("Name (new, immutable)", key="editor_save_name")
        note = st.text_input("Note", key="editor_save_note")
        author = st.text_input("Author", key="editor_save_author")
        save = st.form_submit_button("Save head version", key="editor_save", type="primary")
    if save:
        after = preview_edit(ctx.head, ctx.data.latents, ctx.data.index).after
        try:
            ctx.store.save_head(
                name.strip(),
                ctx.head.weights,
                ctx.head.bias,
                parent=ctx.head.name,
                note=note,
                author=author,
                metrics=tables.head_metrics(after),
            )
        except (ValueError, StoreError) as exc:
            st.error(text.problem("Not saved", exc))
        else:
            ss[state.HEAD_BASE] = name.strip()
            state.set_overrides({})
            clear_sliders()
            ss["editor_notice"] = f"{text.saved_head(name.strip())}; it is now the base."
            st.rerun()
    if ss.get("editor_notice"):
        st.success(ss.pop("editor_notice"))
