"""Pages as functions: the registry, the names pages switch to, and the switches themselves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_app_pages import env, go, start, store_path  # noqa: F401

from app import pages, state
from app.app_pages import overview

APP = Path(__file__).resolve().parents[2] / "app"
# what main.py registered when the pages were files: name (URL path), title, icon, section
REGISTERED = [
    ("overview", "Overview", ":material/home:", "Understand"),
    ("explain", "Explain a score", ":material/waterfall_chart:", "Understand"),
    ("compare", "Compare a pair", ":material/compare_arrows:", "Understand"),
    ("features", "Features", ":material/label:", "Understand"),
    ("editor", "Head editor", ":material/tune:", "Steer"),
    ("shift", "Preference shift", ":material/swap_vert:", "Steer"),
    ("export", "Export", ":material/download:", "Steer"),
    ("audit", "Audit", ":material/fact_check:", "Check"),
    ("bias", "Bias audit", ":material/balance:", "Check"),
    ("add_data", "Add data", ":material/upload_file:", "Data"),
]


def test_the_registry_keeps_the_names_titles_and_sections():
    assert [(p.name, p.title, p.icon, p.section) for p in pages.PAGES] == REGISTERED
    assert [p.name for p in pages.PAGES if p.default] == ["overview"]
    for spec in (*pages.PAGES, pages.BUILD_DEMO):
        module = __import__(f"app.app_pages.{spec.name}", fromlist=["render"])
        assert spec.render is module.render, spec.name
    assert pages.BUILD_DEMO.name == "build_demo" and not pages.BUILD_DEMO.default


def test_every_page_name_the_app_uses_is_registered():
    used = set()
    for path in APP.rglob("*.py"):
        used |= set(re.findall(r"switch_to\(\"(\w+)\"\)", path.read_text()))
    used |= {name for name, _ in overview.LINKS}
    assert used == {"compare", "explain", "features", "editor", "shift", "export", "audit"}
    assert used <= {p.name for p in pages.PAGES}


def test_main_registers_the_st_pages(store_path):  # noqa: F811
    at = start()
    registered = at.session_state[state.PAGE_OBJECTS]
    assert list(registered) == [name for name, *_ in REGISTERED]
    for (name, title, icon, _), page in zip(REGISTERED, registered.values(), strict=True):
        assert (page.title, page.icon) == (title, icon)
        assert page.url_path == ("" if name == "overview" else name)  # the default is at /
    links = [el.proto for el in at.get("page_link")]
    assert [link.page for link in links] == [name for name, _ in overview.LINKS]
    assert [link.label for link in links] == [label for _, label in overview.LINKS]
    assert [link.icon for link in links] == [
        dict((n, i) for n, _, i, _ in REGISTERED)[n] for n, _ in overview.LINKS
    ]


@pytest.mark.parametrize(
    ("page", "button", "title"),
    [
        ("explain", "explain_open_feature", "Features"),
        ("explain", "explain_to_editor", "Head editor"),
        ("compare", "compare_open_feature", "Features"),
        ("features", "features_to_editor", "Head editor"),
        ("audit", "audit_open_feature", "Features"),
        ("audit", "audit_edit_feature", "Head editor"),
    ],
)
def test_buttons_switch_to_their_page(store_path, page, button, title):  # noqa: F811
    at = start()
    go(at, page)
    key = {"explain": "explain_feature", "compare": "compare_feature", "audit": "audit_feature"}
    fid = int(at.selectbox(key=key[page]).value) if page in key else None
    if page == "features":
        fid = int(at.number_input(key="features_fid").value)
    at.button(key=button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [title]
    if title == "Features":
        assert at.number_input(key="features_fid").value == fid
    else:
        assert at.session_state[state.EDITOR_FEATURES] == [fid]
        assert at.slider(key=f"editor_w_{fid}") is not None
