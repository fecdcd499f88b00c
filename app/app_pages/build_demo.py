"""Shown instead of the dashboard while a built-in model's store is not built.

The default SARM ships its weights and its audit set's latents, so building its
store takes seconds; the template-trained demo is built from nothing (minutes).
"""

import streamlit as st

from app import state, text
from sarm import cachedir as paths
from sarm.constants import DEFAULT_MODEL
from workflows.build_default import build_demo
from workflows.default_sarm.store import build_default_store


def intro(model: str) -> str:
    if model == DEFAULT_MODEL:
        return (
            "The dashboard opens on the default SARM: SmolLM2-135M-Instruct, a TopK sparse "
            "autoencoder and a Bradley-Terry head trained on human-labelled preference data "
            "(data/prefs), shipped with the package. Its feature store (the held-out test "
            "split plus xstest) is not built yet "
            f"({text.code(paths.default_dir())}); it is built from the shipped latents in "
            "seconds. `sarm build-default` does the same from a terminal.\n\n"
            "To open another model and store instead, set them in the sidebar or start with "
            "`SARM_MODEL=... SARM_STORE=... streamlit run app/main.py`."
        )
    return (
        "The template-trained demo SARM (SmolLM2-135M-Instruct, an SAE and head trained on "
        "seeded generated preference data) and its store are not built yet "
        f"({text.code(paths.demo_dir())}). Building takes a few minutes on a CPU, once; keep "
        "this page open meanwhile. `sarm build-demo` does the same from a terminal."
    )


def render() -> None:
    model = state.current_sources().model
    is_default = model == DEFAULT_MODEL
    st.title("Build the default store" if is_default else "Build the demo SARM")
    st.markdown(intro(model))
    if st.button("Build now", key="build_start", type="primary"):
        _build(is_default)
        st.rerun()


def _build(is_default: bool) -> None:
    """Build with a progress bar and a log of the steps; stop with a message on failure."""
    what = "the default store" if is_default else "the demo"
    bar = st.progress(0.0, text=state.progress_label("starting", 0.0))
    with st.status(f"Building {what} ...", expanded=True) as status:

        def on_step(step: str, fraction: float) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=state.progress_label(step, fraction))
            status.write(f"{step} ({fraction:.0%})")

        try:
            if is_default:
                build_default_store(progress=False)
            else:
                build_demo(on_step=on_step, progress=False)
        except Exception as exc:  # show any failure as a message; the cached steps are kept
            status.update(label="The build failed", state="error")
            command = "sarm build-default" if is_default else "sarm build-demo"
            st.error(
                text.problem(f"Building {what} failed", exc)
                + f". Run `{command}` in a terminal for details."
            )
            st.stop()
        status.update(label=f"{what.capitalize()} is built", state="complete")
