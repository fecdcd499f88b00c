"""The audit page's one-file HTML report: the page's numbers, tables and charts, escaped, offline."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from test_app_downloads import downloads  # noqa: F401
from test_app_pages import env, frame_with, metric, start, store_path, values  # noqa: F401
from test_app_pages import figures as page_figures

from app import charts
from app.report import ReportSection, report_html
from feature_store import FeatureStore

HOSTILE = '<script>alert("x")</script> **bold** [link](http://example.com)'


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (the standard library's parser)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_tables(page: str) -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables


def plotly_figures(page: str) -> list[dict]:
    """The figures drawn by the page's ``Plotly.newPlot(id, data, layout, config)`` calls."""
    found = []
    decoder = json.JSONDecoder()
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, _ = decoder.raw_decode(page, match.end())
        found.append(data)
    return found


def trace_values(trace: dict) -> tuple:
    return tuple(tuple(values(trace[axis])) for axis in ("x", "y") if axis in trace)


def test_the_audit_report_holds_the_pages_numbers_tables_and_charts(store_path, downloads):  # noqa: F811
    with FeatureStore.open(store_path) as store:
        fid = int(store.features(order_by="abs_contribution", limit=1)["feature_id"][0])
        store.set_label(fid, HOSTILE, "a label that must stay text")
    at = start("audit")
    page = downloads["audit-store-ingest.html"].decode("utf-8")
    facts = {row[0]: row[1] for row in parse_tables(page)[0][1:]}
    assert facts["pairwise accuracy"] == metric(at, "Pairwise accuracy")
    assert facts["pairs"] == metric(at, "Pairs")
    assert facts["head"].startswith("ingest + 0 edits")
    # the subset table as shown on the page, cell for cell
    shown = frame_with(at, "accuracy")
    subsets = parse_tables(page)[1]
    assert subsets[0] == list(shown.columns)
    assert [row[0] for row in subsets[1:]] == shown.iloc[:, 0].astype(str).tolist()
    # the misranked pairs, worst first, with their texts
    wrong = frame_with(at, "reward_rejected")
    misranked = parse_tables(page)[2]
    assert len(misranked) - 1 == min(len(wrong), 100)
    assert [int(r[0]) for r in misranked[1:]] == wrong["pair"].head(100).astype(int).tolist()
    # three charts, the data of the page's charts; plotly.js inline once, nothing fetched
    figures = plotly_figures(page)
    assert len(figures) == 3
    for drawn, written in zip(page_figures(at), figures, strict=True):
        assert [trace_values(t) for t in written] == [trace_values(t) for t in drawn["data"]]
    assert page.count("plotly.js v") == 1 and len(page) > 1_000_000
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?:', page)
    # data is text: the hostile label is escaped everywhere it appears
    assert "<script>alert" not in page
    cells = [cell for table in parse_tables(page) for row in table for cell in row]
    assert HOSTILE in cells  # shown as its characters (the parser unescapes entities)


def test_report_html_escapes_and_cuts_long_cells():
    import pandas as pd

    table = pd.DataFrame({"text": ["<b>x</b>" + "y" * 1000], "value": [0.123456789]})
    fig = charts.error_features(pd.DataFrame({"feature_id": [1], "margin_sum": [0.5]}))
    page = report_html(
        "A <title>", {"model": "<m>"}, [ReportSection("<h>", "<c>", figure=fig, table=table)]
    ).decode("utf-8")
    assert "<title>A &lt;title&gt;</title>" in page and "<h2>&lt;h&gt;</h2>" in page
    cells = parse_tables(page)[1]
    assert cells[1][0].startswith("<b>x</b>yyy") and cells[1][0].endswith("\u2026")
    assert len(cells[1][0]) == 400 and cells[1][1] == "0.1235"
    assert values(plotly_figures(page)[0][0]["x"]) == [0.5]


@pytest.mark.parametrize("n_figures", [0, 2])
def test_plotly_js_is_embedded_once_only_when_there_is_a_chart(n_figures):
    import pandas as pd

    fig = charts.error_features(pd.DataFrame({"feature_id": [1], "margin_sum": [0.5]}))
    sections = [ReportSection(f"s{i}", figure=fig) for i in range(n_figures)]
    page = report_html("t", {}, sections).decode("utf-8")
    assert page.count("plotly.js v") == min(n_figures, 1)
    assert len(plotly_figures(page)) == n_figures
