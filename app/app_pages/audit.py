"""Audit a dataset: accuracy by subset, misranked pairs, the features carrying the errors."""

import streamlit as st

from app import charts, state, widgets
from sarm.audit import error_feature_margins, misranked_pairs, reward_frame, subset_accuracy
from sarm.evaluate import evaluate_arrays

ctx = state.context()
st.title("Audit")
widgets.edit_caption(ctx)
rewards = ctx.rewards()
index = ctx.data.index
report = evaluate_arrays(rewards, index)
m = st.columns(4)
m[0].metric("Pairwise accuracy", widgets.fmt(report.pairwise_accuracy, ".2%"))
m[1].metric("Pairs", f"{report.n_pairs:,}")
m[2].metric("Best-of-N accuracy", widgets.fmt(report.best_of_n_accuracy, ".2%"))
m[3].metric("Mean margin", widgets.fmt(report.mean_margin, "+.4f"))
if report.rmbench:
    st.caption("RM-Bench: " + ", ".join(f"{k} {v:.1%}" for k, v in report.rmbench.items()))

if index.n_pairs:
    st.subheader("Accuracy by subset")
    table = subset_accuracy(rewards, None, index)
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.subset_accuracy(table), key="audit_subsets")
    right.dataframe(
        table.rename(columns={"accuracy_before": "accuracy"}), hide_index=True,
        key="audit_subset_table",
    )  # fmt: skip

    st.subheader("Misranked pairs, worst margin first")
    wrong = misranked_pairs(rewards, index, ctx.data.frame)
    if wrong.empty:
        st.success("Every pair is ranked right.")
    else:
        shown = wrong.drop(columns=["correct"]).head(1000)
        widgets.pair_table(
            shown, "audit_wrong", "Open a misranked pair",
            lambda r: f"{r['group_id']} \u00b7 {r['subset']}: #{r['chosen_id']} vs "
            f"#{r['rejected_id']}, margin {r['margin']:+.4f}",
        )  # fmt: skip

        st.subheader("Features carrying the misranked margin")
        errors = error_feature_margins(
            ctx.data.latents, ctx.weights, index, bias=ctx.bias, rewards=rewards
        )
        st.caption(
            f"Summed over the {errors.attrs['n_errors']:,} misranked pairs (total margin "
            f"{errors.attrs['total_margin']:+.4f}): each feature's w_i (z^chosen_i - z^rejected_i). "
            "Negative sums pushed towards the rejected response."
        )
        top = errors.head(200)
        labels = ctx.labels(top["feature_id"])
        st.plotly_chart(charts.error_features(top, labels), key="audit_error_features")
        st.dataframe(
            top.assign(label=[labels.get(int(f), "") for f in top["feature_id"]]),
            hide_index=True, key="audit_error_table",
        )  # fmt: skip
        e1, e2, e3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        fid = e1.selectbox(
            "Feature", top["feature_id"].head(50).astype(int).tolist(), key="audit_feature",
            format_func=lambda f: charts.feature_name(f, labels, 40),
        )  # fmt: skip
        if e2.button("Open feature", key="audit_open_feature"):
            state.open_feature(fid)
        if e3.button("Edit weight", key="audit_edit_feature"):
            state.add_editor_features([fid])
            st.switch_page(state.PAGES["editor"])
else:
    st.info("This store has no (chosen, rejected) pairs, so there is no ranking to audit.")

st.subheader("Reward distributions by subset and role")
st.plotly_chart(charts.rewards_by_group(reward_frame(ctx.data.frame, rewards)), key="audit_rewards")
