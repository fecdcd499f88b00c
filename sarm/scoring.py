"""Scoring whole preference datasets: one forward per response, cached as sparse latents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sarm.evaluate import EvalReport, PairIndex, evaluate_arrays
from sarm.sparse import SparseLatents
from sarm.types import Conversation, PreferenceGroup

RowKey = tuple[str, str, int]


def response_rows(groups: Sequence[PreferenceGroup]) -> tuple[list[RowKey], list[Conversation]]:
    """Every response of every group as ``(group_id, role, index)`` and its conversation."""
    keys: list[RowKey] = []
    convs: list[Conversation] = []
    for g in groups:
        for role, i, text in g.responses():
            keys.append((g.group_id, role, i))
            convs.append(g.conversation(text))
    return keys, convs


@dataclass
class ScoredResponses:
    """Rewards and pooled sparse latents for every response of a dataset."""

    keys: list[RowKey]
    rewards: np.ndarray
    latents: SparseLatents
    n_tokens: np.ndarray
    truncated: np.ndarray

    def row_of(self) -> dict[RowKey, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def pair_index(self, groups: Sequence[PreferenceGroup]) -> PairIndex:
        return PairIndex.from_groups(groups, self.row_of())


def score_groups(
    model, groups: Sequence[PreferenceGroup], batch_size: int = 8, progress: bool = True
) -> ScoredResponses:
    """Run ``model`` once over every response in ``groups``."""
    keys, convs = response_rows(groups)
    pooled = model.pooled_latents(convs, batch_size=batch_size, progress=progress)
    latents = SparseLatents.from_rows(pooled.indices, pooled.values, model.d_sae)
    return ScoredResponses(keys, pooled.rewards, latents, pooled.n_tokens, pooled.truncated)


def evaluate_model(
    model, groups: Sequence[PreferenceGroup], batch_size: int = 8, progress: bool = True
) -> EvalReport:
    """Pairwise / best-of-N / RM-Bench / per-subset metrics of ``model`` on ``groups``."""
    scored = score_groups(model, groups, batch_size, progress)
    return evaluate_arrays(scored.rewards, scored.pair_index(groups), n_groups=len(groups))
