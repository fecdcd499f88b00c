"""The SARM dashboard: `streamlit run app/main.py`.

Sets up the shared state (which model and store, the current head) and hands
over to the pages in app_pages/. The model and store default to the embedded
demo; SARM_MODEL and SARM_STORE (or the sidebar) point elsewhere.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ first, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import state  # noqa: E402
from app.core import DEMO_MODEL  # noqa: E402

st.set_page_config(page_title="SARM dashboard", page_icon=":material/insights:", layout="wide")
sources = state.sidebar_sources()

if sources.model == DEMO_MODEL and not state.demo_ready(sources):
    st.navigation(
        [st.Page("app_pages/build_demo.py", title="Build the demo", icon=":material/build:")]
    ).run()
    st.stop()

ctx = state.context()
state.sidebar_status(ctx)
st.navigation(
    {
        "Understand": [
            st.Page(
                state.PAGES["overview"], title="Overview", icon=":material/home:", default=True
            ),
            st.Page(
                state.PAGES["explain"], title="Explain a score", icon=":material/waterfall_chart:"
            ),
            st.Page(
                state.PAGES["compare"], title="Compare a pair", icon=":material/compare_arrows:"
            ),
            st.Page(state.PAGES["features"], title="Features", icon=":material/label:"),
        ],
        "Steer": [
            st.Page(state.PAGES["editor"], title="Head editor", icon=":material/tune:"),
            st.Page(state.PAGES["shift"], title="Preference shift", icon=":material/swap_vert:"),
            st.Page(state.PAGES["export"], title="Export", icon=":material/download:"),
        ],
        "Check": [st.Page(state.PAGES["audit"], title="Audit", icon=":material/fact_check:")],
    }
).run()
