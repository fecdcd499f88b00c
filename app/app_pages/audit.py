"""Audit a dataset: accuracy by subset, misranked pairs, the features carrying the errors."""

import functools
from datetime import datetime, timezone
from pathlib import Path

import streamlit as st

from app import charts, choices, state, tables, text, widgets
from app.report import ReportSection, report_html
from sarm.audit import error_feature_margins, misranked_pairs, reward_frame, subset_accuracy
from sarm.evaluate import evaluate_arrays

ERROR_FEATURES = 200  # features listed as carrying the misranked margin
REPORT_ROWS = 100  # rows of each long table in the downloaded report (the CSVs hold all)


def render() -> None:
    ctx = state.context()
    state.link("audit")
    st.title("Audit")
    widgets.edit_caption(ctx)
    download_slot = st.empty()
    sections: list[ReportSection] = []
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
        _errors(ctx, rewards, sections)
    else:
        st.info("This store has no (chosen, rejected) pairs, so there is no ranking to audit.")

    st.subheader("Reward distributions by subset and role")
    distribution = charts.rewards_by_group(reward_frame(ctx.data.frame, rewards))
    st.plotly_chart(distribution, key="audit_rewards")
    sections.append(ReportSection("Reward distributions by subset and role", figure=distribution))
    _report_download(download_slot, ctx, report, sections)


def report_facts(ctx: state.Context, report) -> dict[str, str]:
    """The report's header: what was audited, under which head, and the headline figures."""
    return {
        "model": ctx.sources.model,
        "store": ctx.sources.store,
        "head": f"{ctx.head.name} + {len(ctx.head.overrides)} edits (hash {ctx.head.hash()})",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "responses": f"{len(ctx.data.frame):,}",
        "pairs": f"{report.n_pairs:,}",
        "pairwise accuracy": text.fmt(report.pairwise_accuracy, ".2%"),
        "best-of-N accuracy": text.fmt(report.best_of_n_accuracy, ".2%"),
        "mean margin": text.fmt(report.mean_margin, "+.4f"),
    }


def _report_download(slot, ctx: state.Context, report, sections: list[ReportSection]) -> None:
    """One HTML file with the page's figures, tables and charts, made when clicked."""
    name = f"audit-{Path(ctx.sources.store).stem}-{ctx.head.name}.html"
    slot.download_button(
        "Download this audit as one HTML file (charts included)",
        functools.partial(report_html, "SARM audit", report_facts(ctx, report), sections),
        name,
        "text/html",
        key="audit_report_dl",
        on_click="ignore",
    )


def _errors(ctx: state.Context, rewards, sections: list[ReportSection]) -> None:
    """Accuracy by subset, the misranked pairs and the features that carry their margin."""
    index = ctx.data.index
    st.subheader("Accuracy by subset")
    table = subset_accuracy(rewards, None, index)
    left, right = st.columns([3, 2])
    chart, shown = charts.subset_accuracy(table), tables.subset_accuracy(table)
    left.plotly_chart(chart, key="audit_subsets")
    right.dataframe(shown, hide_index=True, key="audit_subset_table")
    sections.append(ReportSection("Accuracy by subset", figure=chart, table=shown))

    st.subheader("Misranked pairs, worst margin first")
    wrong = misranked_pairs(rewards, index, ctx.data.frame)
    if wrong.empty:
        st.success("Every pair is ranked right.")
        return
    wrong_shown = widgets.with_pair_texts(ctx, tables.misranked(wrong))
    sections.append(
        ReportSection(
            "Misranked pairs, worst margin first",
            f"{len(wrong_shown):,} misranked pairs; the worst {min(len(wrong_shown), REPORT_ROWS)} here.",
            table=wrong_shown.head(REPORT_ROWS),
        )
    )
    widgets.pair_table(
        wrong_shown,
        "audit_wrong",
        "Open a misranked pair",
        text.misranked_pair,
        "misranked_pairs",
    )

    st.subheader("Features carrying the misranked margin")
    errors = error_feature_margins(ctx.data.latents, ctx.head, index, rewards=rewards)
    caption = text.error_margin_caption(errors.attrs["n_errors"], errors.attrs["total_margin"])
    st.caption(caption)
    top = errors.head(ERROR_FEATURES)
    labels = ctx.labels(top["feature_id"])
    error_chart = charts.error_features(top, labels)
    st.plotly_chart(error_chart, key="audit_error_features")
    error_table = tables.with_labels(top, labels)
    sections.append(
        ReportSection(
            "Features carrying the misranked margin",
            caption,
            figure=error_chart,
            table=error_table.head(REPORT_ROWS),
        )
    )
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
