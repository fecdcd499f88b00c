"""Placeholder page until the dashboard lands (see the dashboard issue)."""

import streamlit as st

st.set_page_config(page_title="SARM dashboard", layout="wide")
st.title("SARM dashboard")
st.info(
    "The dashboard is not built yet. Meanwhile the library works: "
    "`sarm score --model DIR --prompt P --response R`."
)
