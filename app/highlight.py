"""Token highlights: per-token values rendered as escaped, coloured HTML spans.

This module is the dashboard's only source of HTML. Token texts come from the
model's tokenizer and from user data, and titles and feature names from labels,
so every string it is given is HTML-escaped; only the span markup is ours. What it
returns is a :class:`SafeHtml`, and ``app.widgets.show_html`` (the one ``st.html``
call) draws nothing else. Positive
values are shaded orange, negative ones blue, with opacity proportional to
``|value| / scale`` so that texts shown side by side can share one scale.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSITIVE_RGB = (245, 130, 32)
NEGATIVE_RGB = (45, 110, 230)
MAX_ALPHA = 0.85
POOLED_RGB = "#d62728"
POOLED_NOTE = "scored token"
POOLED_TITLE = "the pooled end-of-turn token: the reward is r_T = w \u00b7 z_T + b here"
NEWLINE_MARK = "\u21b5"  # the return-arrow glyph shown where a token holds a line break
_SPECIAL = re.compile(r"^<\|[^|<>]{1,40}\|>$|^<s>$|^</s>$")


class SafeHtml(str):
    """HTML built by this module from escaped text (the only kind ``show_html`` draws)."""


@dataclass(frozen=True)
class TokenSpan:
    """One token ready to draw: visible text, value and colour."""

    text: str
    value: float
    color: str
    special: bool


def display_text(token: str) -> str:
    """A token's visible text: line breaks marked with a glyph (and kept), tabs as spaces."""
    text = token.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return text.replace("\n", NEWLINE_MARK + "\n")


def value_scale(*value_arrays: Sequence[float] | np.ndarray) -> float:
    """The largest finite ``|value|`` over all arrays (1.0 when there is none or it is 0)."""
    best = 0.0
    for values in value_arrays:
        arr = np.abs(np.asarray(values, dtype=np.float64))
        arr = arr[np.isfinite(arr)]
        if arr.size:
            best = max(best, float(arr.max()))
    return best if best > 0 else 1.0


def token_color(value: float, scale: float) -> str:
    """CSS ``rgba`` colour of ``value`` on a symmetric scale (transparent at 0)."""
    if not math.isfinite(value) or value == 0 or scale <= 0:
        return "rgba(0,0,0,0)"
    alpha = min(1.0, abs(value) / scale) * MAX_ALPHA
    r, g, b = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    return f"rgba({r},{g},{b},{alpha:.3f})"


def token_spans(
    tokens: Sequence[str], values: Sequence[float] | np.ndarray, scale: float | None = None
) -> list[TokenSpan]:
    """Pair each token with its value and colour; ``scale`` defaults to ``max |value|``."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.shape != (len(tokens),):
        raise ValueError(f"need one value per token: {len(tokens)} tokens, values {vals.shape}")
    scale = value_scale(vals) if scale is None else float(scale)
    return [
        TokenSpan(display_text(str(t)), float(v), token_color(float(v), scale), is_special(str(t)))
        for t, v in zip(tokens, vals, strict=True)
    ]


def is_special(token: str) -> bool:
    """Chat-template markers such as ``<|im_start|>`` (drawn dimmed)."""
    return bool(_SPECIAL.match(token.strip()))


def _span_html(span: TokenSpan, pooled: bool = False) -> str:
    style = f"background:{span.color};"
    if span.special:
        style += "color:#888;font-size:0.8em;"
    title = f"{span.value:+.4g}"
    if pooled:
        style += f"outline:2px solid {POOLED_RGB};outline-offset:1px;"
        title += f" \u00b7 {POOLED_TITLE}"
    title = html.escape(title, quote=True)
    cls = "sarm-tok sarm-pooled" if pooled else "sarm-tok"
    out = f'<span class="{cls}" style="{style}" title="{title}">{html.escape(span.text)}</span>'
    if pooled:
        out += (
            f'<span class="sarm-pooled-note" style="color:{POOLED_RGB};font-size:0.75em;'
            f'font-family:sans-serif;"> \u25c0 {POOLED_NOTE}</span>'
        )
    return out


def highlight_html(
    tokens: Sequence[str],
    values: Sequence[float] | np.ndarray,
    *,
    scale: float | None = None,
    title: str | None = None,
    pooled: int | None = None,
) -> SafeHtml:
    """Escaped HTML of the tokens, each shaded by its value (hover shows the value).

    ``pooled``: the index of the token the head scores, outlined and labelled.
    """
    spans = token_spans(tokens, values, scale)
    if pooled is not None and not 0 <= pooled < len(spans):
        raise ValueError(f"pooled token {pooled} is outside the {len(spans)} tokens")
    body = "".join(_span_html(s, i == pooled) for i, s in enumerate(spans))
    head = f'<div class="sarm-hl-title">{html.escape(title)}</div>' if title else ""
    return SafeHtml(
        f'<div class="sarm-hl">{head}<div style="font-family:ui-monospace,monospace;'
        "font-size:0.85em;white-space:pre-wrap;word-break:break-word;line-height:1.8;"
        'border:1px solid rgba(128,128,128,0.3);border-radius:6px;padding:8px;">'
        f"{body}</div></div>"
    )


def legend_html(scale: float, feature: str | None = None) -> SafeHtml:
    """A one-line legend for the colour scale: ``activation of FEATURE`` (the name escaped)."""
    pos = token_color(scale, scale)
    neg = token_color(-scale, scale)
    what = "activation" if feature is None else f"activation of {feature}"
    return SafeHtml(
        '<div style="font-size:0.8em;">'
        f'<span style="background:{neg};padding:0 6px;">{-scale:+.3g}</span> '
        f"{html.escape(what)} "
        f'<span style="background:{pos};padding:0 6px;">{scale:+.3g}</span></div>'
    )


__all__ = [
    "SafeHtml",
    "TokenSpan",
    "display_text",
    "highlight_html",
    "is_special",
    "legend_html",
    "token_color",
    "token_spans",
    "value_scale",
]
