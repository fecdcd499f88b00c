"""Held-out figures of the real default: per category and per source, with 95% intervals.

Every head is reported beside the two length baselines ("shorter wins", "longer
wins") on the same pairs, so a reader sees at once whether a head beats length.
The bootstrap resamples prompts (groups sharing a prompt move together).
"""

from __future__ import annotations

import numpy as np

from sarm.evaluate import accuracy_by, accuracy_interval, length_rewards, prompt_clusters
from workflows.default_sarm.data import SplitData


def length_baselines(split: SplitData) -> dict[str, np.ndarray]:
    """Rewards of the two length baselines, one per distinct conversation."""
    texts = [conv[-1]["content"] for conv in split.conversations]
    return {
        "shorter_wins": length_rewards(texts, longer_wins=False),
        "longer_wins": length_rewards(texts, longer_wins=True),
    }


def _labels(split: SplitData, key: str) -> list[str]:
    return [str(g.meta.get(key) or "unknown") for g in split.groups]


def _rounded(entry: dict) -> dict:
    return {
        "accuracy": round(float(entry["accuracy"]), 4),
        "n_pairs": int(entry["n_pairs"]),
        "n_prompts": int(entry["n_prompts"]),
        "ci95": [round(float(x), 4) for x in entry["ci95"]],
    }


def split_report(split: SplitData, rewards: dict[str, np.ndarray], seed: int = 0) -> dict:
    """``{head: {overall, macro_category, per_category, per_source}}`` on one split."""
    index = split.pair_index()
    clusters = prompt_clusters(split.groups)
    out = {}
    for name, r in rewards.items():
        overall = accuracy_interval(r, index, clusters=clusters, seed=seed)
        per_cat = accuracy_by(r, index, _labels(split, "category"), clusters=clusters, seed=seed)
        per_src = accuracy_by(r, index, _labels(split, "source"), clusters=clusters, seed=seed)
        out[name] = {
            "overall": _rounded(overall),
            "macro_category": round(float(np.mean([v["accuracy"] for v in per_cat.values()])), 4),
            "per_category": {k: _rounded(v) for k, v in sorted(per_cat.items())},
            "per_source": {k: _rounded(v) for k, v in sorted(per_src.items())},
        }
    return out


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
        macro = [f"{report[h]['macro_category']:.3f}" for h in heads]
        lines.append("| " + " | ".join(["**macro**", "", *macro]) + " |")
    return "\n".join(lines)
