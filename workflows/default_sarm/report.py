"""Held-out figures of the default: per category and per source, with 95% intervals.

The figures are :func:`sarm.evaluate.head_summary` (what ``sarm eval`` reports),
rounded to 4 decimals for the manifest. Every head is reported beside the two
length baselines ("shorter wins", "longer wins") on the same pairs, so a reader
sees at once whether a head beats length. The bootstrap resamples prompts.
"""

from __future__ import annotations

import numpy as np

from sarm.evaluate import head_summary, length_rewards
from workflows.default_sarm.data import SplitData


def length_baselines(split: SplitData) -> dict[str, np.ndarray]:
    """Rewards of the two length baselines, one per distinct conversation."""
    texts = [conv[-1]["content"] for conv in split.conversations]
    return {
        "shorter_wins": length_rewards(texts, longer_wins=False),
        "longer_wins": length_rewards(texts, longer_wins=True),
    }


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


def split_report(split: SplitData, rewards: dict[str, np.ndarray], seed: int = 0) -> dict:
    """``{head: head_summary}`` on one split (``all``, ``category_macro``, per category / source)."""
    index = split.pair_index()
    return {
        name: _rounded(head_summary(r, index, split.groups, seed=seed))
        for name, r in rewards.items()
    }


def markdown_table(report: dict, by: str = "per_category") -> str:
    """A table with one row per category (or source) and one column per head."""
    heads = list(report)
    names = sorted({k for h in heads for k in report[h][by]})
    lines = [
        "| " + " | ".join([by.removeprefix("per_"), "pairs", *heads]) + " |",
        "| " + " | ".join(["---"] * (len(heads) + 2)) + " |",
    ]
    for name in names:
        cells = [report[h][by].get(name) for h in heads]
        n = next(c["n_pairs"] for c in cells if c)
        shown = [
            f"{c['accuracy']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]" if c else ""
            for c in cells
        ]
        lines.append("| " + " | ".join([name, str(n), *shown]) + " |")
    if by == "per_category":
        macro = [f"{report[h]['category_macro']:.3f}" for h in heads]
        lines.append("| " + " | ".join(["**macro**", "", *macro]) + " |")
    return "\n".join(lines)
