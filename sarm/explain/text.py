"""Evidence windows as one line of text (the feature page, reports, LLM prompts may use it)."""

from __future__ import annotations

from sarm.explain.types import EvidenceWindow

PEAK = ("⟦", "⟧")
SCORED = ("⟨", "⟩")


def window_line(window: EvidenceWindow, limit: int = 400) -> str:
    """The window's tokens with the peak and the scored token marked, newlines flattened."""
    parts = []
    for i, token in enumerate(window.tokens):
        shown = token.replace("\n", "⏎")
        if i == window.peak:
            shown = f"{PEAK[0]}{shown}{PEAK[1]}"
        if i == window.scored:
            shown = f"{SCORED[0]}{shown}{SCORED[1]}"
        parts.append(shown)
    line = "".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"
