"""Audit a dataset: accuracy by subset, misranked pairs, the features carrying the errors."""

import streamlit as st

from app import charts, choices, state, tables, text, widgets
from sarm.audit import error_feature_margins, misranked_pairs, reward_frame, subset_accuracy
from sarm.evaluate import evaluate_arrays

ERROR_FEATURES = 200  # features listed as carrying the misranked margin


def render() -> None:
    ctx = state.context()
    state.link("audit")
    st.title("Audit")
    widgets.edit_caption(ctx)
    rewards = ctx.rewards()
    report = evaluate_arrays(rewards, ctx.data.index)
    m = st.columns(4)
    m[0].metric("Pairwise accuracy", text.fmt(report.pairwise_accuracy, ".2%"))
    m[1].metric("Pairs", f"{report.n_pairs:,}")
    m[2].metric("Best-of-N accuracy", text.fmt(report.best_of_n_accuracy, ".2%"))
    m[3].metric("Mean margin", text.fmt(report.mean_margin, "+.4f"))
    if report.best_of_n_accuracy is None:
        st.caption(text.BEST_OF_N_NA)
    if report.rmbench:
        st.caption(text.rmbench_caption(report.rmbench))

    if ctx.data.index.n_pairs:
        _errors(ctx, rewards)
    else:
        st.info("This store has no (chosen, rejected) pairs, so there is no ranking to audit.")

    st.subheader("Reward distributions by subset and role")
    st.plotly_chart(
        charts.rewards_by_group(reward_frame(ctx.data.frame, rewards)), key="audit_rewards"
    )


def _errors(ctx: state.Context, rewards) -> None:
    """Accuracy by subset, the misranked pairs and the features that carry their margin."""
    index = ctx.data.index
    st.subheader("Accuracy by subset")
    table = subset_accuracy(rewards, None, index)
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.subset_accuracy(table), key="audit_subsets")
    right.dataframe(tables.subset_accuracy(table), hide_index=True, key="audit_subset_table")

    st.subheader("Misranked pairs, worst margin first")
    wrong = misranked_pairs(rewards, index, ctx.data.frame)
    if wrong.empty:
        st.success("Every pair is ranked right.")
        return
    widgets.pair_table(
        widgets.with_pair_texts(ctx, tables.misranked(wrong)),
        "audit_wrong",
        "Open a misranked pair",
        text.misranked_pair,
        "misranked_pairs",
    )

    st.subheader("Features carrying the misranked margin")
    errors = error_feature_margins(ctx.data.latents, ctx.head, index, rewards=rewards)
    st.caption(text.error_margin_caption(errors.attrs["n_errors"], errors.attrs["total_margin"]))
    top = errors.head(ERROR_FEATURES)
    labels = ctx.labels(top["feature_id"])
    st.plotly_chart(charts.error_features(top, labels), key="audit_error_features")
    error_table = tables.with_labels(top, labels)
    st.dataframe(error_table, hide_index=True, key="audit_error_table")
    widgets.downloads(error_table, "misranked_margin_features", "audit_error_dl")
    e1, e2, e3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    fid = e1.selectbox(
        "Feature",
        choices.top_features(top),
        key="audit_feature",
        format_func=lambda f: charts.feature_name(f, labels, 40),
    )
    if e2.button("Open feature", key="audit_open_feature"):
        state.open_feature(fid)
    if e3.button("Edit weight", key="audit_edit_feature"):
        state.open_in_editor([fid])
