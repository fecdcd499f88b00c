"""The SARM dashboard: `streamlit run app/main.py`.

Sets up the shared state (which model and store, the current head) and hands
over to the pages registered in app/pages.py (one function per page, in
app_pages/). The model and store default to the embedded default SARM and its
audit-set store; SARM_MODEL and SARM_STORE (or the sidebar) point elsewhere.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ first, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import pages, state  # noqa: E402

# An emoji favicon is drawn in the browser (a material icon would be fetched from a font host).
st.set_page_config(page_title="SARM dashboard", page_icon="📊", layout="wide")
sources = state.sidebar_sources()

if sources.is_builtin and not state.builtin_ready(sources):
    demo_pages = pages.build([pages.BUILD_DEMO])
    state.register_pages(demo_pages)
    st.navigation(list(demo_pages.values())).run()
    st.stop()

ctx = state.context()
state.sidebar_status(ctx)
state.sidebar_job()
dashboard = pages.build(pages.PAGES)
state.register_pages(dashboard)
page = st.navigation(pages.sections(pages.PAGES, dashboard))
if page.url_path not in pages.DRAWS_HEAD:
    state.sidebar_head(ctx)
page.run()
