"""Landing page: what is loaded, headline metrics, where to go next."""

import streamlit as st

from app import core, state, tables, text, widgets
from sarm.constants import DEFAULT_MODEL
from sarm.evaluate import evaluate_arrays
from workflows.default_sarm.store import shipped_manifest

INTRO = (
    "A SARM's reward is an exact sum of interpretable terms, "
    "`r = sum_i w_i z_i + b`: one per sparse-autoencoder feature active at the final "
    "end-of-turn token. Ask why a response scored as it did, what a feature means, and what "
    "the rewards would be if a feature's weight changed; then export the adjusted head."
)
LINKS = (  # (page, label); the icon is the page's own
    ("explain", "Explain a score: the waterfall of one response's reward"),
    ("compare", "Compare a pair: the margin between chosen and rejected, feature by feature"),
    ("features", "Features: browse, read top examples, label"),
    ("editor", "Head editor: change weights and watch the metrics live"),
    ("shift", "Preference shift: find the features behind a set of responses and move them"),
    ("export", "Export the edited head or a whole checkpoint"),
    ("audit", "Audit: where the reward model is wrong, and which features carry the error"),
)


def render() -> None:
    ctx = state.context()
    state.link("overview")
    st.title("SARM dashboard")
    st.markdown(INTRO)
    summary = ctx.store.summary()
    report = evaluate_arrays(ctx.rewards(), ctx.data.index)
    cols = st.columns(4)
    cols[0].metric("Responses", f"{ctx.data.n_examples:,}")
    cols[1].metric("Pairs", f"{ctx.data.index.n_pairs:,}")
    cols[2].metric("Pairwise accuracy", text.fmt(report.pairwise_accuracy, ".1%"))
    cols[3].metric("Labelled features", f"{summary['n_labelled_features']:,} / {ctx.model.d_sae:,}")
    share = core.dataset_error_share(ctx.head, ctx.data.latents, ctx.store.error_feature)
    if share is not None:
        st.metric("SAE error's share of reward variance", f"{share:.1%}", help=text.ERROR_HELP)
    widgets.edit_caption(ctx)

    if ctx.sources.model == DEFAULT_MODEL:
        default_card()

    st.subheader("Where to start")
    for name, label in LINKS:
        st.page_link(state.page(name), label=label)

    with st.expander("Loaded model and store"):
        st.table(
            tables.loaded_summary(
                ctx.sources.model,
                ctx.model.fingerprint(),
                summary,
                ctx.head.name,
                len(ctx.head.overrides),
            ).set_index("item")
        )


def default_card() -> None:
    """What the default SARM was trained on and how it does on held-out data."""
    manifest = shipped_manifest()
    if not manifest:
        return
    sae = manifest["sae"]
    st.subheader("The default SARM")
    st.markdown(
        f"SmolLM2-135M-Instruct cut after {sae['layer']} layers, a {sae['level']}-level TopK "
        f"SAE ({sae['d_sae']:,} latents, k = {sae['k']}) and a linear head over its latents "
        f"{core.head_kind(manifest)}, trained on "
        "the train split of 8 public human-labelled preference sources (`data/prefs`). "
        "Held-out accuracy on the test split (never seen in training or tuning), with 95% "
        "intervals over prompts, beside the dense baseline and the two length baselines:"
    )
    st.dataframe(core.heldout_frame(manifest["heldout"], "test"), hide_index=True)
    with st.expander("xstest (refusals and over-refusals; evaluation only)"):
        st.dataframe(core.heldout_frame(manifest["heldout"], "xstest"), hide_index=True)
    with st.expander("Every evaluation set, public held-out benchmarks included"):
        st.caption(
            "sarm: what ships; sae: the head on SAE features alone; SAE error share: the "
            "variance of the reward's SAE-error term over the variance of the reward."
        )
        st.dataframe(core.heldout_sets_frame(manifest), hide_index=True)
