"""Features: a sortable, filterable table; a feature's histogram, examples, statistics and label."""

import streamlit as st

from app import charts, core, state, widgets
from feature_store import StoreError
from feature_store.queries import FEATURE_ORDERS
from app.highlight import legend_html

PAGE_SIZE = 50
ctx = state.context()
st.title("Features")
rev = ctx.revision()

# ---------------------------------------------------------------- the table
f1, f2, f3, f4 = st.columns([3, 2, 1, 2])
search = f1.text_input("Label or description contains", key="features_search")
ORDERS = ["abs_contribution", *[o for o in FEATURE_ORDERS if o != "abs_contribution"]]
order = f2.selectbox("Sort by", ORDERS, key="features_order")
descending = f3.toggle("Descending", value=True, key="features_desc")
labelled = f4.radio(
    "Show", ["all", "labelled", "unlabelled"], key="features_labelled", horizontal=True
)
g1, g2 = st.columns(2)
min_freq = g1.number_input("Minimum frequency", 0.0, 1.0, 0.0, step=0.01, key="features_min_freq")
filters = {
    "search": search.strip() or None,
    "min_frequency": min_freq or None,
    "labelled": {"all": None, "labelled": True, "unlabelled": False}[labelled],
}
try:
    _, total = state.features_page(ctx.path, rev, limit=1, **filters)
except (ValueError, StoreError) as exc:
    st.error(f"Cannot list features: {exc}")
    st.stop()
pages = max(1, -(-total // PAGE_SIZE))
page = g2.number_input(f"Page (of {pages})", 1, pages, 1, key="features_page")
frame, _ = state.features_page(
    ctx.path, rev, order_by=order, descending=descending, limit=PAGE_SIZE,
    offset=(int(page) - 1) * PAGE_SIZE, **filters,
)  # fmt: skip
if frame.empty:
    st.info("No feature matches these filters.")
    st.stop()
frame.insert(2, "current_weight", ctx.weights[frame["feature_id"].to_numpy()])
shown = frame[["feature_id", "label", "weight", "current_weight", "frequency", "mean_activation",
               "mean_contribution", "salience", "label_description"]]  # fmt: skip
event = st.dataframe(
    shown, hide_index=True, key="features_table", on_select="rerun", selection_mode="single-row",
    column_config={
        "feature_id": st.column_config.NumberColumn("feature", format="%d"),
        "weight": st.column_config.NumberColumn("ingest weight", format="%.4f"),
        "current_weight": st.column_config.NumberColumn("current weight", format="%.4f"),
        "frequency": st.column_config.NumberColumn(format="%.4f"),
        "mean_activation": st.column_config.NumberColumn(format="%.4f"),
        "mean_contribution": st.column_config.NumberColumn(format="%+.5f"),
        "salience": st.column_config.NumberColumn(format="%+.3f"),
    },
)  # fmt: skip
st.caption(f"{total:,} features match; click a row to open it.")

# ---------------------------------------------------------------- which feature
selected = list(event.selection.rows) if event is not None else []
if selected and st.session_state.get("features_last_row") != (int(page), selected[0]):
    st.session_state["features_last_row"] = (int(page), selected[0])
    st.session_state["features_fid"] = int(shown["feature_id"].iloc[selected[0]])
wanted = st.session_state.get(state.FEATURE)
if wanted is not None and st.session_state.get("features_wanted") != wanted:
    st.session_state["features_wanted"] = wanted
    st.session_state["features_fid"] = int(wanted)
st.session_state.setdefault("features_fid", int(shown["feature_id"].iloc[0]))
st.divider()
fid = int(st.number_input("Feature id", 0, ctx.model.d_sae - 1, key="features_fid", step=1))
st.session_state[state.FEATURE] = fid
st.session_state["features_wanted"] = fid

try:
    info = state.feature_stats(ctx.path, rev, fid)
    top, quantiles, hist = state.feature_examples(ctx.path, fid, 20)
except (LookupError, StoreError) as exc:
    st.error(f"Feature {fid}: {exc}")
    st.stop()
label = info.get("label") or ""
st.header(f"Feature {fid}" + (f": {label}" if label else ""))
if info.get("label_description"):
    st.caption(info["label_description"])
m = st.columns(6)
m[0].metric("Weight (ingest)", f"{info['weight']:.4f}")
m[1].metric("Weight (current)", f"{float(ctx.weights[fid]):.4f}")
m[2].metric(
    "Frequency",
    f"{info['frequency']:.1%}" if info["frequency"] >= 0.01 else f"{info['frequency']:.2e}",
)
m[3].metric("Mean activation", widgets.fmt(info["mean_activation"]))
m[4].metric("Mean contribution", widgets.fmt(info["mean_contribution"], "+.5f"))
m[5].metric("Salience", widgets.fmt(info["salience"], "+.3f"))
if st.button("Edit this feature's weight", key="features_to_editor"):
    state.add_editor_features([fid])
    st.switch_page(state.PAGES["editor"])

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
    st.subheader("Label")
    if st.session_state.get("features_label_for") != fid:
        st.session_state["features_label_for"] = fid
        st.session_state["features_label_text"] = label
        st.session_state["features_label_desc"] = info.get("label_description") or ""
    with st.form("features_label_form"):
        st.text_input("Label", key="features_label_text", max_chars=200)
        st.text_area("Description", key="features_label_desc", height=80)
        st.text_input("Author", key="features_label_author", max_chars=100)
        saved = st.form_submit_button("Save label", key="features_label_save", type="primary")
    if saved:
        try:
            ctx.store.set_label(
                fid, st.session_state["features_label_text"],
                st.session_state["features_label_desc"], st.session_state["features_label_author"],
            )  # fmt: skip
        except (ValueError, StoreError) as exc:
            st.error(f"The label was not saved: {exc}")
        else:
            st.session_state.pop("features_label_for", None)
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

# ---------------------------------------------------------------- examples
st.subheader("Top-activating examples")
if top.empty:
    st.info("No examples.")
else:
    n_hl = st.slider("Highlighted", 1, min(10, len(top)), min(3, len(top)), key="features_n_hl")
    scale = max(float(top["activation"].abs().max()), 1e-9)
    st.html(legend_html(scale, f"activation of f{fid}"))
    for _, row in top.head(n_hl).iterrows():
        st.markdown(
            f"**#{row['example_id']}** \u00b7 {row['role']} \u00b7 {row['subset'] or '(none)'} \u00b7 "
            f"z = {row['activation']:.4f} \u00b7 contribution {row['contribution']:+.4f}"
        )
        hl = widgets.stored_tracks(ctx, int(row["example_id"]), [fid])
        if hl is not None:
            widgets.highlight(
                hl.tokens, hl.feature(fid), max(scale, float(abs(hl.feature(fid)).max()))
            )
    cols = [
        "rank",
        "example_id",
        "activation",
        "contribution",
        "role",
        "subset",
        "reward",
        "response",
    ]
    st.dataframe(
        top[cols].assign(response=top["response"].map(core.short)),
        hide_index=True,
        key="features_top_table",
    )

st.subheader("Examples from lower activation quantiles")
if quantiles.empty:
    st.caption("None (the feature is active in too few examples for quantile bands).")
else:
    st.dataframe(
        quantiles[["band", "rank", "example_id", "activation", "contribution", "role", "subset", "response"]]
        .assign(response=quantiles["response"].map(core.short)),
        hide_index=True, key="features_quantile_table",
    )  # fmt: skip
    if st.toggle("Highlight them", key="features_quantile_hl"):
        for band, part in quantiles.groupby("band"):
            st.markdown(f"**Band {band}**")
            for eid, act in zip(part["example_id"], part["activation"], strict=True):
                hl = widgets.stored_tracks(ctx, int(eid), [fid])
                if hl is not None:
                    st.caption(f"#{eid} \u00b7 z = {act:.4f}")
                    widgets.highlight(hl.tokens, hl.feature(fid), scale)
