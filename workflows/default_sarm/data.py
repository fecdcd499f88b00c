"""The vendored preference splits and the distinct responses the build scores."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarm.data import load_preferences
from sarm.evaluate import PairIndex
from sarm.types import Conversation, PreferenceGroup, responses_of

SPLITS = ("train", "dev", "test", "xstest")


def splits_dir() -> Path:
    """``data/prefs/splits`` of this checkout (the vendored, prompt-disjoint splits)."""
    return Path(__file__).resolve().parents[2] / "data" / "prefs" / "splits"


@dataclass
class SplitData:
    """One split: its groups, its distinct conversations, and each response's row."""

    name: str
    groups: list[PreferenceGroup]
    conversations: list[Conversation]  # distinct, in first-seen order
    row_of_response: np.ndarray  # response number (responses_of order) -> conversation row
    n_skipped: int

    def pair_index(self) -> PairIndex:
        """Pairs over conversation rows (duplicated responses share a row)."""
        rows = {r.key: int(self.row_of_response[r.example_id]) for r in responses_of(self.groups)}
        return PairIndex.from_groups(self.groups, rows)


def evenly(groups: list[PreferenceGroup], limit: int | None) -> list[PreferenceGroup]:
    """``limit`` groups spread evenly over the file (so every source is represented)."""
    if limit is None or limit >= len(groups):
        return groups
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    step = len(groups) / limit
    return [groups[int(i * step)] for i in range(limit)]


def load_split(name: str, root: Path | None = None, limit: int | None = None) -> SplitData:
    """Load ``name`` (skipping the rows with empty responses, counted in ``n_skipped``).

    ``limit`` keeps that many groups, spread evenly over the file.
    """
    path = (root or splits_dir()) / f"{name}.jsonl.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = load_preferences(path, skip_malformed=True)
    groups = evenly(list(result.groups), limit)
    seen: dict[str, int] = {}
    conversations: list[Conversation] = []
    rows = []
    for response in responses_of(groups):
        conv = response.conversation()
        key = json.dumps(conv, sort_keys=True)
        if key not in seen:
            seen[key] = len(conversations)
            conversations.append(conv)
        rows.append(seen[key])
    return SplitData(name, groups, conversations, np.asarray(rows, np.int64), len(result.skipped))
