"""The page registry: each page's function, title, URL path, icon and section.

``main.py`` turns these into ``st.Page`` objects on every run, hands them to
``st.navigation`` and registers them with :func:`app.state.register_pages`, so
that a page switches to another by name (``state.switch_to("editor")``)
without importing it. A page's name is its URL path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import streamlit as st

from app.app_pages import (
    add_data,
    audit,
    bias,
    build_demo,
    compare,
    editor,
    explain,
    export,
    features,
    overview,
    shift,
)


@dataclass(frozen=True)
class PageSpec:
    """One page: the function that draws it and how the navigation shows it."""

    name: str  # also its URL path
    render: Callable[[], None]
    title: str
    icon: str
    section: str = ""
    default: bool = False

    def page(self) -> st.Page:
        return st.Page(
            self.render,
            title=self.title,
            icon=self.icon,
            url_path=self.name,
            default=self.default,
        )


UNDERSTAND, STEER, CHECK, DATA = "Understand", "Steer", "Check", "Data"
PAGES = (
    PageSpec("overview", overview.render, "Overview", ":material/home:", UNDERSTAND, True),
    PageSpec(
        "explain", explain.render, "Explain a score", ":material/waterfall_chart:", UNDERSTAND
    ),
    PageSpec("compare", compare.render, "Compare a pair", ":material/compare_arrows:", UNDERSTAND),
    PageSpec("features", features.render, "Features", ":material/label:", UNDERSTAND),
    PageSpec("editor", editor.render, "Head editor", ":material/tune:", STEER),
    PageSpec("shift", shift.render, "Preference shift", ":material/swap_vert:", STEER),
    PageSpec("export", export.render, "Export", ":material/download:", STEER),
    PageSpec("audit", audit.render, "Audit", ":material/fact_check:", CHECK),
    PageSpec("bias", bias.render, "Bias audit", ":material/balance:", CHECK),
    PageSpec("add_data", add_data.render, "Add data", ":material/upload_file:", DATA),
)
DRAWS_HEAD = frozenset({"editor"})  # pages that draw the sidebar's head line themselves
BUILD_DEMO = PageSpec("build_demo", build_demo.render, "Build", ":material/build:")


def build(specs: Iterable[PageSpec]) -> dict[str, st.Page]:
    """Fresh ``st.Page`` objects by name (``st.navigation`` marks the ones it is given)."""
    return {spec.name: spec.page() for spec in specs}


def sections(specs: Iterable[PageSpec], pages: dict[str, st.Page]) -> dict[str, list[st.Page]]:
    """The pages grouped by section, in registry order, as ``st.navigation`` takes them."""
    out: dict[str, list[st.Page]] = {}
    for spec in specs:
        out.setdefault(spec.section, []).append(pages[spec.name])
    return out
