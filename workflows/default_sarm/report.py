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


SET_HEADS = ("sarm", "dense", "sae", "joint-wd0.001", "shorter_wins", "longer_wins")


def sets_markdown(heldout: dict, per_set: dict) -> str:
    """One row per evaluation set: accuracy [95% CI] of each head, SAE quality, error share."""
    heads = [h for h in SET_HEADS if all(h in r for r in heldout.values())]
    lines = [
        "| set | pairs | " + " | ".join(heads) + " | FVU at u_T | dead | SAE error share |",
        "| --- | --- | " + " | ".join(["---"] * len(heads)) + " | --- | --- | --- |",
    ]
    for name, report in heldout.items():
        q = per_set.get(name, {})
        cells = []
        for h in heads:
            a = report[h]["all"]
            cells.append(f"{a['accuracy']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]")
        share = q.get("error_share", {}).get("sarm")
        tail = [f"{q.get('fvu_u_T', float('nan')):.3f}", f"{q.get('dead_fraction', float('nan')):.3f}",
                "" if share is None else f"{share:.3f}"]  # fmt: skip
        n = report[heads[0]]["all"]["n_pairs"]
        lines.append("| " + " | ".join([name, f"{n:,}", *cells, *tail]) + " |")
    return "\n".join(lines)
