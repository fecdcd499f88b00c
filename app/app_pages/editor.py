"""Head editor: move feature weights, watch the example and the whole store respond live."""

import time

import numpy as np
import streamlit as st

from app import charts, core, state, widgets
from feature_store import StoreError
from sarm.audit import preview_edit
from sarm.export import as_weight

ss = st.session_state
ctx = state.context()
st.title("Head editor")
st.caption(
    "Change the head's weight of any feature. The rewards of every stored response are "
    "recomputed from the store's cached sparse latents (the model is not run), so the "
    "metrics below follow the sliders."
)


def weight_key(fid: int) -> str:
    return f"editor_w_{fid}"


def sync(fid: int) -> None:
    """Slider moved: record its value (rounded to float32) as an override, or drop it."""
    value = as_weight(ss[weight_key(fid)])
    overrides = dict(ss[state.OVERRIDES])
    if value == float(ctx.edit.base_weights[fid]):
        overrides.pop(fid, None)
    else:
        overrides[fid] = value
    state.set_overrides(overrides)


def set_weight(fid: int, value: float) -> None:
    ss[weight_key(fid)] = float(value)
    sync(fid)


def remove(fid: int) -> None:
    ss[state.EDITOR_FEATURES] = [f for f in ss[state.EDITOR_FEATURES] if f != fid]
    ss.pop(weight_key(fid), None)
    overrides = dict(ss[state.OVERRIDES])
    overrides.pop(fid, None)
    state.set_overrides(overrides)


def change_base() -> None:
    ss[state.HEAD_BASE] = ss["editor_base"]
    state.set_overrides({})
    for key in [k for k in ss if str(k).startswith("editor_w_")]:
        del ss[key]


def add_id() -> None:
    state.add_editor_features([int(ss["editor_add_id"])])


# ---------------------------------------------------------------- base version
versions = ctx.store.head_versions()
names = versions["name"].tolist() or [ctx.edit.base_name]
if ctx.edit.base_name not in names:
    names.insert(0, ctx.edit.base_name)
ss["editor_base"] = ctx.edit.base_name
st.selectbox(
    "Base head version (switching discards unsaved edits)",
    names,
    key="editor_base",
    on_change=change_base,
)

# ---------------------------------------------------------------- the current example
st.caption("The example list shows and filters rewards under the base head.")
eid = widgets.example_picker(ctx, "editor", ctx.editor.base_rewards)
expl = ctx.explain_example(eid)

# ---------------------------------------------------------------- choose features
with st.container(border=True):
    a, b, c = st.columns([2, 2, 3])
    a.number_input("Feature id", 0, ctx.model.d_sae - 1, 0, step=1, key="editor_add_id")
    a.button("Add feature", key="editor_add", on_click=add_id)
    top_ids = expl.table["feature_id"].head(5).astype(int).tolist()
    b.write("")
    b.button(
        "Add this example's top 5 contributors", key="editor_add_top",
        on_click=state.add_editor_features, args=(top_ids,),
    )  # fmt: skip
    query = c.text_input("Search labels", key="editor_label_q")
    if query.strip():
        try:
            hits = ctx.store.search_labels(query.strip(), limit=50)
        except (ValueError, StoreError) as exc:
            c.error(str(exc))
            hits = None
        if hits is not None and hits.empty:
            c.caption("No label matches.")
        elif hits is not None:
            hit_labels = dict(zip(hits["feature_id"], hits["label"], strict=True))
            pick = c.multiselect(
                "Matching features", list(hit_labels), key="editor_label_pick",
                format_func=lambda f: charts.feature_name(f, hit_labels, 40),
            )  # fmt: skip
            c.button(
                "Add these",
                key="editor_add_label",
                on_click=state.add_editor_features,
                args=(pick,),
            )

features = list(dict.fromkeys([*ss[state.EDITOR_FEATURES], *ctx.edit.overrides]))
if not features:
    st.info("Add features to edit: by id, from this example's top contributors, or by label.")
scale = float(np.abs(ctx.edit.base_weights).max()) or 1.0
labels = ctx.labels(features)
acts = dict(zip(expl.table["feature_id"], expl.table["activation"], strict=True))
for fid in features:
    base = float(ctx.edit.base_weights[fid])
    current = float(ctx.edit.overrides.get(fid, base))
    lo, hi, step = core.slider_range(base, current, scale)
    if weight_key(fid) not in ss:
        ss[weight_key(fid)] = current
    cols = st.columns([3, 5, 1, 1, 1], vertical_alignment="bottom")
    cols[0].markdown(
        f"**{charts.feature_name(fid, labels, 36)}**  \nbase {base:+.4f} \u00b7 "
        f"z here {acts.get(fid, 0.0):.4f}"
    )
    cols[1].slider(
        f"weight of f{fid}", lo, hi, step=step, format="%.4f", key=weight_key(fid),
        on_change=sync, args=(fid,), label_visibility="collapsed",
    )  # fmt: skip
    cols[2].button(
        "0", key=f"editor_zero_{fid}", on_click=set_weight, args=(fid, 0.0), help="set to zero"
    )
    cols[3].button(
        "\u21ba",
        key=f"editor_reset_{fid}",
        on_click=set_weight,
        args=(fid, base),
        help="reset to base",
    )
    cols[4].button(
        "\u2715", key=f"editor_remove_{fid}", on_click=remove, args=(fid,), help="remove"
    )

# ---------------------------------------------------------------- live results
start = time.perf_counter()
preview = preview_edit(ctx.editor, ctx.data.index, ctx.edit.overrides)
ms = (time.perf_counter() - start) * 1000
row = ctx.data.row(eid)
st.subheader("This example")
m = st.columns(3)
m[0].metric("Reward (base head)", f"{preview.rewards_before[row]:.6f}")
m[1].metric(
    "Reward (edited)", f"{preview.rewards_after[row]:.6f}",
    delta=f"{preview.rewards_after[row] - preview.rewards_before[row]:+.6f}"
    if ctx.edit.overrides
    else None,
)  # fmt: skip
m[2].metric("Changed weights", len(ctx.edit.overrides))
with st.expander("Waterfall under the edited head", expanded=bool(ctx.edit.overrides)):
    widgets.explanation(ctx, expl, "editor")

st.subheader("The whole store")
before, after = preview.before, preview.after
m = st.columns(4)
m[0].metric("Pairwise accuracy (base)", widgets.fmt(before.pairwise_accuracy, ".2%"))
m[1].metric(
    "Pairwise accuracy (edited)", widgets.fmt(after.pairwise_accuracy, ".2%"),
    delta=None if after.pairwise_accuracy is None or not ctx.edit.overrides
    else f"{(after.pairwise_accuracy - before.pairwise_accuracy) * 100:+.2f} pts",
)  # fmt: skip
m[2].metric("Flipped pairs", len(preview.flipped))
m[3].metric("Recomputed in", f"{ms:.1f} ms")
left, right = st.columns(2)
table = preview.per_subset()
with left:
    if not table.empty:
        st.plotly_chart(charts.subset_accuracy(table), key="editor_subset_chart")
with right:
    st.plotly_chart(
        charts.reward_histograms(preview.rewards_before, preview.rewards_after), key="editor_hist"
    )
st.dataframe(table, hide_index=True, key="editor_subset_table")

st.subheader("Pairs whose ranking flipped")
flipped = preview.flipped_table(ctx.data.index, ctx.data.frame)
if flipped.empty:
    st.caption("None.")
else:
    widgets.pair_table(
        flipped, "editor_flipped", "Open a flipped pair",
        lambda r: f"{r['group_id']}: #{r['chosen_id']} vs #{r['rejected_id']} ({r['change']})",
    )  # fmt: skip

# ---------------------------------------------------------------- save
st.subheader("Save as a head version")
with st.form("editor_save_form"):
    name = st.text_input("Name (new, immutable)", key="editor_save_name")
    note = st.text_input("Note", key="editor_save_note")
    author = st.text_input("Author", key="editor_save_author")
    save = st.form_submit_button("Save head version", key="editor_save", type="primary")
if save:
    metrics = {"pairwise_accuracy": after.pairwise_accuracy, "n_pairs": float(after.n_pairs)}
    metrics |= {f"accuracy_{s}": v["accuracy"] for s, v in after.per_subset.items()}
    try:
        ctx.store.save_head(
            name.strip(), ctx.edit.weights(), ctx.edit.bias, parent=ctx.edit.base_name,
            note=note, author=author, metrics={k: v for k, v in metrics.items() if v is not None},
        )  # fmt: skip
    except (ValueError, StoreError) as exc:
        st.error(f"Not saved: {exc}")
    else:
        ss[state.HEAD_BASE] = name.strip()
        state.set_overrides({})
        for key in [k for k in ss if str(k).startswith("editor_w_")]:
            del ss[key]
        ss["editor_notice"] = f"Saved head version {name.strip()!r}; it is now the base."
        st.rerun()
if ss.get("editor_notice"):
    st.success(ss.pop("editor_notice"))
