"""Shown instead of the dashboard while the embedded demo is not built."""

import streamlit as st

from app import state, text
from sarm import cachedir as paths
from sarm.constants import DEFAULT_LAYER
from workflows.build_default import build_demo


def intro() -> str:
    return (
        "The dashboard opens on the embedded default: SmolLM2-135M-Instruct cut after "
        f"{DEFAULT_LAYER} layers, a TopK sparse autoencoder and a Bradley-Terry head trained "
        "on seeded demo preference data, and a feature store of that data. They are not built "
        f"yet ({text.code(paths.demo_dir())}). Building takes a few minutes on a CPU, once; keep this "
        "page open meanwhile. `scripts/dashboard` (or `sarm build-demo`) does the same from a "
        "terminal.\n\n"
        "To open another model and store instead, set them in the sidebar or start with "
        "`SARM_MODEL=... SARM_STORE=... streamlit run app/main.py`."
    )


def render() -> None:
    st.title("Build the demo SARM")
    st.markdown(intro())
    if st.button("Build the demo now", key="build_start", type="primary"):
        _build()
        st.rerun()


def _build() -> None:
    """Build the demo with a progress bar and a log of the steps; stop with a message on failure."""
    bar = st.progress(0.0, text=state.progress_label("starting", 0.0))
    with st.status("Building the demo ...", expanded=True) as status:

        def on_step(step: str, fraction: float) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=state.progress_label(step, fraction))
            status.write(f"{step} ({fraction:.0%})")

        try:
            build_demo(on_step=on_step, progress=False)
        except Exception as exc:  # show any failure as a message; the cached steps are kept
            status.update(label="The build failed", state="error")
            st.error(
                text.problem("Building the demo failed", exc)
                + ". Run `sarm build-demo` in a terminal for details."
            )
            st.stop()
        status.update(label="The demo is built", state="complete")
