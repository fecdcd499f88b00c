"""Scoring whole preference datasets: one forward per response, cached as sparse latents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sarm.evaluate import EvalReport, PairIndex, evaluate_arrays
from sarm.head import LinearHead
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
    hidden: np.ndarray | None = None  # standardised u_T, when asked for

    def row_of(self) -> dict[RowKey, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def pair_index(self, groups: Sequence[PreferenceGroup]) -> PairIndex:
        return PairIndex.from_groups(groups, self.row_of())


def score_groups(
    model,
    groups: Sequence[PreferenceGroup],
    batch_size: int = 8,
    progress: bool = True,
    return_hidden: bool = False,
) -> ScoredResponses:
    """Run ``model`` once over every response in ``groups``."""
    keys, convs = response_rows(groups)
    pooled = model.pooled_latents(convs, batch_size, progress, return_hidden=return_hidden)
    latents = SparseLatents.from_rows(pooled.indices, pooled.values, model.d_sae)
    return ScoredResponses(
        keys, pooled.rewards, latents, pooled.n_tokens, pooled.truncated, pooled.hidden
    )


def evaluate_model(
    model,
    groups: Sequence[PreferenceGroup],
    batch_size: int = 8,
    progress: bool = True,
    baseline: LinearHead | None = None,
) -> tuple[EvalReport, EvalReport | None]:
    """Metrics of ``model`` on ``groups``, and of a dense ``baseline`` head on ``u_T``.

    The baseline (a linear head over the standardised hidden state at the same
    layer and token) is scored from the same forward pass.
    """
    scored = score_groups(model, groups, batch_size, progress, return_hidden=baseline is not None)
    index = scored.pair_index(groups)
    report = evaluate_arrays(scored.rewards, index, n_groups=len(groups))
    if baseline is None:
        return report, None
    if baseline.size != scored.hidden.shape[1]:
        raise ValueError(
            f"the baseline head has {baseline.size} weights but the hidden size is "
            f"{scored.hidden.shape[1]}"
        )
    base_r = scored.hidden.astype(np.float64) @ baseline.weight.double().numpy() + baseline.bias
    return report, evaluate_arrays(base_r, index, n_groups=len(groups))
