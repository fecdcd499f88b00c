"""Features: a sortable, filterable table; a feature's histogram, examples, statistics and label."""

import streamlit as st

from app import charts, choices, core, state, tables, text, widgets
from app.app_pages import feature_evidence
from feature_store import StoreError

PAGE_SIZE = 50
TOP_EXAMPLES = 20
HIGHLIGHTED = "features_highlighted"  # features whose uncached highlights were asked for
TABLE_COLUMNS = {
    "feature_id": st.column_config.NumberColumn("feature", format="%d"),
    "weight": st.column_config.NumberColumn("ingest weight", format="%.4f"),
    "current_weight": st.column_config.NumberColumn("current weight", format="%.4f"),
    "frequency": st.column_config.NumberColumn(format="%.4f"),
    "mean_activation": st.column_config.NumberColumn(format="%.4f"),
    "mean_contribution": st.column_config.NumberColumn(format="%+.5f"),
    "salience": st.column_config.NumberColumn(format="%+.3f"),
    "score": st.column_config.NumberColumn("explanation score", format="%.2f"),
}


def render() -> None:
    ctx = state.context()
    st.title("Features")
    clicked, first = _table(ctx)
    fid = _feature_id(ctx, clicked, first)
    try:
        info = state.feature_stats(ctx.path, ctx.revision(), fid)
        top, quantiles, hist = state.feature_examples(ctx.path, fid, TOP_EXAMPLES)
    except (LookupError, StoreError) as exc:
        state.stop_with("error", text.problem(f"Feature {fid}", exc))
    _statistics(ctx, fid, info)
    feature_evidence.render_explanation(ctx, fid)
    left, right = st.columns([3, 2])
    with left:
        if hist.empty or int(hist["count"].sum()) == 0:
            st.info("This feature is never active in the store.")
        else:
            st.plotly_chart(
                charts.activation_histogram(hist, title=f"Activations of f{fid} where active"),
                key="features_hist",
            )
    with right:
        _label(ctx, fid, info)
    feature_evidence.render_evidence(ctx, fid)
    _examples(ctx, fid, top, quantiles)


def _table(ctx: state.Context) -> tuple[tuple[int, int, int] | None, int]:
    """Filters and a page of the feature table.

    Returns the row clicked, as ``(page, row, feature)`` (None: no click), and
    the page's first feature.
    """
    rev = ctx.revision()
    keep = state.keep
    f1, f2, f3, f4 = st.columns([3, 2, 1, 2])
    search = f1.text_input("Label or description contains", key=keep("features_search"))
    orders = [*choices.feature_orders(), choices.EXPLANATION_ORDER]
    order = f2.selectbox("Sort by", orders, key=keep("features_order"))
    descending = f3.toggle("Descending", key=keep("features_desc", True))
    shown = f4.radio(
        "Show", list(choices.FEATURE_SHOWN), key=keep("features_labelled"), horizontal=True
    )
    g1, g2 = st.columns(2)
    min_freq = g1.number_input(
        "Minimum frequency", 0.0, 1.0, step=0.01, key=keep("features_min_freq", 0.0)
    )
    filters = choices.feature_filters(search, min_freq, shown)
    h1, h2, h3 = st.columns([3, 2, 2])
    contains = h1.text_input("Explanation contains", key=keep("features_explained_text"))
    source = h2.selectbox("Explained by", choices.EXPLAINED_BY, key=keep("features_source"))
    min_score = h3.number_input(
        "Minimum explanation score", 0.0, 1.0, step=0.05, key=keep("features_min_score", 0.0)
    )
    wanted = choices.explained_features(
        state.shown_explanations(ctx.path, rev), contains, source, min_score
    )
    if wanted is not None:
        filters["feature_ids"] = wanted
    try:
        _, total = state.features_page(ctx.path, rev, limit=1, **filters)
    except (ValueError, StoreError) as exc:
        state.stop_with("error", text.problem("Cannot list features", exc))
    pages = choices.page_count(total, PAGE_SIZE)
    keep("features_page", 1)
    state.put("features_page", min(max(int(st.session_state["features_page"]), 1), pages))
    page = int(g2.number_input(f"Page (of {pages})", 1, pages, key="features_page"))
    if order == choices.EXPLANATION_ORDER:
        frame = _by_explanation_score(ctx, rev, filters, descending, page)
    else:
        frame, _ = state.features_page(
            ctx.path,
            rev,
            order_by=order,
            descending=descending,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
            **filters,
        )
    if frame.empty:
        state.stop_with("info", "No feature matches these filters.")
    table = tables.feature_table(frame, ctx.head.weights)
    table = tables.with_explanations(table, state.shown_explanations(ctx.path, rev))
    event = st.dataframe(
        table,
        hide_index=True,
        key="features_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config=TABLE_COLUMNS,
    )
    st.caption(f"{total:,} features match; click a row to open it.")
    widgets.downloads(table, f"features_page{page}", "features_table_dl")
    selected = list(event.selection.rows) if event is not None else []
    clicked = (page, selected[0], int(table["feature_id"].iloc[selected[0]])) if selected else None
    return clicked, int(table["feature_id"].iloc[0])


def _by_explanation_score(ctx, rev, filters: dict, descending: bool, page: int):
    """A page of the matching features ordered by their explanation's score (all pages agree:
    every matching feature is ranked, then the page is cut)."""
    every, _ = state.features_page(ctx.path, rev, order_by="feature_id", limit=None, **filters)
    shown = state.shown_explanations(ctx.path, rev)
    ranked = choices.by_explanation_score(every["feature_id"], shown, descending)
    cut = ranked[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return every.set_index("feature_id").loc[cut].reset_index()


def _feature_id(ctx: state.Context, clicked: tuple[int, int, int] | None, first: int) -> int:
    """The feature to show: a newly clicked row, one asked for by a link or another page, the
    typed id, or the one shown last."""
    ss = st.session_state
    if clicked is not None and ss.get("features_last_row") != clicked[:2]:
        ss["features_last_row"] = clicked[:2]
        ss["features_fid"] = clicked[2]
    asked = state.requested("features", "feature")
    if asked is not None:
        try:
            ss["features_fid"] = core.link_id(asked, "feature id", ctx.model.d_sae)
        except ValueError as exc:
            st.warning(text.plain(exc))
    if "features_fid" not in ss:
        ss["features_fid"] = ss.get(state.FEATURE, first)
    st.divider()
    fid = int(st.number_input("Feature id", 0, ctx.model.d_sae - 1, key="features_fid", step=1))
    ss[state.FEATURE] = fid
    widgets.copy_link(state.link("features", feature=fid))
    return fid


def _statistics(ctx: state.Context, fid: int, info: dict) -> None:
    st.header(text.feature_header(fid, info.get("label") or ""))
    if info.get("label_description"):
        st.caption(text.plain(info["label_description"]))
    m = st.columns(6)
    m[0].metric("Weight (ingest)", f"{info['weight']:.4f}")
    m[1].metric("Weight (current)", f"{float(ctx.head.weights[fid]):.4f}")
    m[2].metric("Frequency", text.frequency(info["frequency"]))
    m[3].metric("Mean activation", text.fmt(info["mean_activation"]))
    m[4].metric("Mean contribution", text.fmt(info["mean_contribution"], "+.5f"))
    m[5].metric("Salience", text.fmt(info["salience"], "+.3f"))
    if st.button("Edit this feature's weight", key="features_to_editor"):
        state.open_in_editor([fid])


def _label(ctx: state.Context, fid: int, info: dict) -> None:
    """The label form (prefilled with the current label) and the label's history."""
    ss = st.session_state
    st.subheader("Label")
    if ss.get("features_label_for") != fid:
        ss["features_label_for"] = fid
        ss["features_label_text"] = info.get("label") or ""
        ss["features_label_desc"] = info.get("label_description") or ""
    with st.form("features_label_form"):
        st.text_input("Label", key="features_label_text", max_chars=200)
        st.text_area("Description", key="features_label_desc", height=80)
        st.text_input("Author", key="features_label_author", max_chars=100)
        saved = st.form_submit_button("Save label", key="features_label_save", type="primary")
    if saved:
        try:
            ctx.store.set_label(
                fid,
                ss["features_label_text"],
                ss["features_label_desc"],
                ss["features_label_author"],
            )
        except (ValueError, StoreError) as exc:
            st.error(text.problem("The label was not saved", exc))
        else:
            ss.pop("features_label_for", None)
            st.rerun()
    history = ctx.store.label_history(fid)
    if history.empty:
        st.caption("No label yet.")
    else:
        st.dataframe(
            history[["label", "description", "author", "source", "created_at"]],
            hide_index=True,
            key="features_history",
        )


def highlight_feature(fid: int) -> None:
    """Highlight feature ``fid``'s examples even where it takes a forward pass."""
    ss = st.session_state
    ss[HIGHLIGHTED] = [*ss.get(HIGHLIGHTED, []), int(fid)][-64:]


def _examples(ctx: state.Context, fid: int, top, quantiles) -> None:
    """The top-activating examples, highlighted, and examples from lower quantile bands.

    Opening a feature reads only the store: highlights it has not cached (the
    dashboard's store is read-only) take a forward pass each, run on a click.
    """
    ss = st.session_state
    st.subheader("Top-activating examples")
    if top.empty:
        st.info("No examples.")
        scale = None
    else:
        n_hl = st.slider("Highlighted", 1, min(10, len(top)), min(3, len(top)), key="features_n_hl")
        scale = choices.highlight_scale(top["activation"])
        widgets.legend(scale, f"f{fid}")
        compute = fid in ss.get(HIGHLIGHTED, ())
        missing = 0
        for _, row in top.head(n_hl).iterrows():
            st.markdown(text.top_example(row))
            hl = widgets.stored_tracks(ctx, int(row["example_id"]), [fid], compute=compute)
            if hl is None:
                missing += 1
                st.text(core.short(row["response"], 400))
                continue
            track = hl.feature(fid)
            widgets.highlight(hl.tokens, track, max(scale, float(abs(track).max())))
        if missing:
            st.button(
                text.highlight_button(missing),
                key="features_highlight",
                on_click=highlight_feature,
                args=(fid,),
            )
        top_table = tables.top_examples(top)
        st.dataframe(top_table, hide_index=True, key="features_top_table")
        widgets.downloads(top_table, f"feature{fid}_top_examples", "features_top_dl")

    st.subheader("Examples from lower activation quantiles")
    if quantiles.empty:
        st.caption("None (the feature is active in too few examples for quantile bands).")
        return
    quantile_table = tables.quantile_examples(quantiles)
    st.dataframe(quantile_table, hide_index=True, key="features_quantile_table")
    widgets.downloads(quantile_table, f"feature{fid}_quantile_examples", "features_quantile_dl")
    if st.toggle(text.QUANTILE_HIGHLIGHT, key=f"features_quantile_hl_{fid}"):
        for band, part in quantiles.groupby("band"):
            st.markdown(f"**Band {band}**")
            for eid, act in zip(part["example_id"], part["activation"], strict=True):
                hl = widgets.stored_tracks(ctx, int(eid), [fid])
                if hl is not None:
                    st.caption(f"#{eid} \u00b7 z = {act:.4f}")
                    widgets.highlight(hl.tokens, hl.feature(fid), scale)
