"""Prompt text for the LLM explainer, and forgiving parsers for what a model answers.

Two prompts, versioned together by :data:`PROMPT_VERSION` (bump it whenever a
template changes, so stored explanations say which prompt wrote them):

- the **explain** prompt shows windows of the top and quantile examples, the
  strongest tokens marked ``<<like this>>`` with the window's peak activation,
  and the contrastive tokens with their counts; it asks for one line of
  explanation and a 1-5 monosemanticity rating (the SARM paper's scale);
- the **detect** prompt (delphi-style scoring) shows windows *without* marks
  and asks whether the explanation matches each: one window (yes / no) or a
  batch (a list of 1 / 0).

Small models answer sloppily: the parsers accept tags in any case, markdown,
quotes, ``4/5``, a bare digit, ``Yes.``; when nothing can be read they say so
(``None``) instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sarm.explain.types import EvidenceWindow

PROMPT_VERSION = "llm-explain-v1"

Messages = list[dict[str, str]]

#: tokens at or above this share of the window's peak activation are marked
MARK_SHARE = 0.5
#: the longest explanation kept (one line, as the prompt asks)
MAX_EXPLANATION_CHARS = 200

_SYSTEM = (
    "You are an interpretability researcher. You study one feature of a sparse "
    "autoencoder trained on a language model's hidden states, and say in a few words "
    "what it detects."
)

TEXT_PLACEHOLDER = "a short phrase saying what the feature detects"
_EXPLAIN_TASK = (
    "Reply with exactly two lines:\n"
    f"EXPLANATION: <{TEXT_PLACEHOLDER}>\n"
    "MONOSEMANTICITY: <a number from 1 to 5; 5 = every excerpt shows the same single "
    "concept, 1 = no common pattern>"
)

_INTRO = (
    "Feature {feature} fires on the text excerpts below. The tokens where it fires most "
    "strongly are marked <<like this>>; the number in brackets is its strongest activation "
    "in the excerpt."
)

#: the worked example's answer (a reply that repeats it is discarded)
EXAMPLE_EXPLANATION = "names of European cities"

# One worked example before the real question: small models (SmolLM2-135M) ignore the
# two-line format without it and follow it with it.
_EXAMPLE = [
    {
        "role": "user",
        "content": "\n\n".join(
            [
                _INTRO.format(feature=9),
                "Excerpts:\n1. [3.10] We flew from<< Paris>> to<< Rome>> last week.\n"
                "2. [2.40] The conference is in<< Berlin>> this year.\n"
                "3. [1.90] She grew up near<< Madrid>>.",
                _EXPLAIN_TASK,
            ]
        ),
    },
    {
        "role": "assistant",
        "content": f"EXPLANATION: {EXAMPLE_EXPLANATION}\nMONOSEMANTICITY: 5",
    },
]


# ----------------------------------------------------------------- rendering windows
def window_text(window: EvidenceWindow, *, marked: bool) -> str:
    """The window as one line of text; with ``marked``, its strongest tokens as ``<<token>>``."""
    top = max(window.activations, default=0.0)
    threshold = top * MARK_SHARE if top > 0 else float("inf")
    parts = []
    for token, activation in zip(window.tokens, window.activations, strict=True):
        if marked and activation >= threshold:
            parts.append(f"<<{token}>>")
        else:
            parts.append(token)
    return _one_line("".join(parts))


def _one_line(text: str, *, strip: bool = True) -> str:
    text = text.replace("\r", "").replace("\n", "\\n")
    return text.strip() if strip else text


def _explain_windows(windows: Sequence[EvidenceWindow], limit: int) -> list[str]:
    lines = []
    for window in [w for w in windows if w.active][:limit]:
        top = max(window.activations, default=0.0)
        lines.append(f"{len(lines) + 1}. [{top:.2f}] {window_text(window, marked=True)}")
    return lines


#: a contrastive token as (text, count where the feature fires, count in the background),
#: or a line the store already wrote (e.g. ``"'sorry' (31 active, x9.5)"``)
Contrastive = tuple[str, int, int] | str


def _contrastive_lines(contrastive: Sequence[Contrastive], limit: int) -> list[str]:
    return [_contrastive_line(item) for item in list(contrastive)[:limit]]


def _contrastive_line(item: Contrastive) -> str:
    if isinstance(item, str):
        return _one_line(item)
    token, active, background = item
    return (
        f'"{_one_line(token, strip=False)}": {active} times where it fires, '
        f"{background} in the background"
    )


# ----------------------------------------------------------------- the explain prompt
def explain_messages(
    feature_id: int,
    windows: Sequence[EvidenceWindow],
    contrastive: Sequence[Contrastive],
    *,
    max_windows: int = 20,
    max_contrastive: int = 15,
) -> Messages:
    """The chat messages asking for an explanation of ``feature_id`` from its evidence."""
    excerpts = _explain_windows(windows, max_windows)
    if not excerpts:
        raise ValueError(
            f"feature {feature_id}: no active window to explain it from "
            "(pass windows of examples where the feature fires)"
        )
    parts = [_INTRO.format(feature=feature_id), "Excerpts:\n" + "\n".join(excerpts)]
    tokens = _contrastive_lines(contrastive, max_contrastive)
    if tokens:
        parts.append(
            "Tokens over-represented where it fires (counts in the excerpts where it "
            "fires vs a background sample):\n" + "\n".join(tokens)
        )
    parts.append(_EXPLAIN_TASK)
    return [
        {"role": "system", "content": _SYSTEM},
        *_EXAMPLE,
        {"role": "user", "content": "\n\n".join(parts)},
    ]


# ----------------------------------------------------------------- the detect prompts
def detect_messages(explanation: str, windows: Sequence[EvidenceWindow]) -> Messages:
    """Messages asking whether ``explanation`` matches each window (none of them marked)."""
    if len(windows) == 1:
        question = (
            f'A feature of a language model is explained as: "{_one_line(explanation)}".\n\n'
            f"Text: {window_text(windows[0], marked=False)}\n\n"
            "Does the explanation describe something in this text? Answer yes or no."
        )
    else:
        excerpts = "\n".join(
            f"{i + 1}. {window_text(w, marked=False)}" for i, w in enumerate(windows)
        )
        question = (
            f'A feature of a language model is explained as: "{_one_line(explanation)}".\n\n'
            f"Excerpts:\n{excerpts}\n\n"
            f"For each of the {len(windows)} excerpts answer 1 if the explanation describes "
            "something in it, else 0. Reply with one line: a list of "
            f"{len(windows)} numbers, e.g. [{', '.join(['1', '0'] * (len(windows) // 2))}"
            f"{', 1' if len(windows) % 2 else ''}]"
        )
    return [{"role": "user", "content": question}]


# ----------------------------------------------------------------- parsing replies
@dataclass(frozen=True)
class ParsedExplanation:
    """What could be read from an explain reply; ``how`` says which rule found the text."""

    text: str
    monosemanticity: int | None
    how: str  # "tagged", "first line", "empty", "copied example" or "copied placeholder"


_TAG = re.compile(r"^\W*explanation\W*?[:\-=]\s*(.*)$", re.IGNORECASE)
_MONO_TAG = re.compile(r"monosemanticity[^0-9\n]{0,20}([1-5])(?![0-9.])", re.IGNORECASE)
_MONO_LOOSE = re.compile(r"(?<![0-9.])([1-5])\s*(?:/\s*5|out of 5)", re.IGNORECASE)
_MONO_LINE = re.compile(r"^\W*(?:score|rating)?\W*([1-5])\W*$", re.IGNORECASE)
_DECOR = " \t*_`#>-:"
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’"}


def parse_explanation(reply: str) -> ParsedExplanation:
    """The explanation and the 1-5 rating in ``reply``, read as forgivingly as is safe.

    A reply that repeats the prompt's worked example says nothing about the feature:
    it comes back without text (``how == "copied example"``), like an empty one; so
    does one that repeats the format's placeholder (``"copied placeholder"``).
    """
    parsed = _read_explanation(reply)
    said = parsed.text.strip("<>. ").casefold()
    if said == EXAMPLE_EXPLANATION.casefold():
        return ParsedExplanation("", None, "copied example")
    if said == TEXT_PLACEHOLDER.casefold():
        return ParsedExplanation("", None, "copied placeholder")
    return parsed


def _read_explanation(reply: str) -> ParsedExplanation:
    lines = [line.strip() for line in (reply or "").splitlines() if line.strip()]
    mono = _monosemanticity(reply or "", lines)
    for line in lines:
        match = _TAG.match(line)
        if match and _clean(match.group(1)):
            return ParsedExplanation(_clean(match.group(1)), mono, "tagged")
    for line in lines:
        if _MONO_TAG.search(line) or _MONO_LINE.match(line):
            continue
        text = _clean(line)
        if text:
            return ParsedExplanation(text, mono, "first line")
    return ParsedExplanation("", mono, "empty")


def _monosemanticity(reply: str, lines: list[str]) -> int | None:
    for pattern in (_MONO_TAG, _MONO_LOOSE):
        match = pattern.search(reply)
        if match:
            return int(match.group(1))
    for line in reversed(lines):
        match = _MONO_LINE.match(line)
        if match:
            return int(match.group(1))
    return None


def _clean(text: str) -> str:
    text = re.sub(r"\*\*|__", "", text).strip(_DECOR).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:  # quotes around the whole text
        text = text[1:-1].strip(_DECOR).strip()
    if len(text) > MAX_EXPLANATION_CHARS:
        text = text[: MAX_EXPLANATION_CHARS - 1].rstrip() + "…"
    return text


_YES = re.compile(r"\b(yes|true|match(?:es)?)\b", re.IGNORECASE)
_NO = re.compile(r"\b(no|false|not)\b", re.IGNORECASE)


def parse_yes_no(reply: str) -> bool | None:
    """True for a yes, False for a no (whichever comes first), None when it says neither."""
    text = (reply or "").strip()
    if text[:1] in ("1", "0"):
        return text[0] == "1"
    yes, no = _YES.search(text), _NO.search(text)
    if yes and (not no or yes.start() < no.start()):
        return True
    if no:
        return False
    return None


def parse_batch(reply: str, n: int) -> list[bool] | None:
    """``n`` answers from a reply like ``[1, 0, 1]`` (or ``1 0 1``), None unless exactly ``n``."""
    text = reply or ""
    bracket = re.search(r"\[([^\]]*)\]", text)
    digits = re.findall(r"(?<![0-9.])[01](?![0-9.])", bracket.group(1) if bracket else text)
    if len(digits) != n:
        return None
    return [d == "1" for d in digits]
