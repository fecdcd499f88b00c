"""A page's findings as one self-contained HTML file: facts, tables and interactive charts.

Every text is escaped (labels, prompts and responses are data, never markup), and
plotly.js is embedded once, so the file opens offline and shows what the page showed.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { max-width: 38em; overflow-wrap: anywhere; }
.caption { color: #666; font-size: 0.9em; }
"""
CELL_CHARS = 400  # longer cells (prompts, responses) are cut with an ellipsis


@dataclass(frozen=True)
class ReportSection:
    """One heading with an optional caption, chart and table."""

    heading: str
    caption: str = ""
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None


def _cell(value: object) -> object:
    if isinstance(value, str) and len(value) > CELL_CHARS:
        return value[: CELL_CHARS - 1] + "\u2026"
    return value


def table_html(frame: pd.DataFrame) -> str:
    """``frame`` as an escaped HTML table (long texts cut, floats to 4 decimals)."""
    shown = frame.map(_cell) if len(frame) else frame
    return shown.to_html(index=False, escape=True, border=0, float_format=lambda x: f"{x:.4f}")


def _figure_html(fig: go.Figure, first: bool) -> str:
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=first,  # the library once, inline: the file works offline
        config={"displaylogo": False, "responsive": True},
    )


def report_html(title: str, facts: Mapping[str, str], sections: Sequence[ReportSection]) -> bytes:
    """The report as UTF-8 HTML: a facts table, then each section in order."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        table_html(pd.DataFrame({"": list(facts), "value": list(facts.values())})),
    ]
    first_figure = True
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.caption:
            parts.append(f'<p class="caption">{html.escape(section.caption)}</p>')
        if section.figure is not None:
            parts.append(_figure_html(section.figure, first_figure))
            first_figure = False
        if section.table is not None:
            parts.append(table_html(section.table))
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")
