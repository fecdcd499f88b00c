"""Scoring whole preference datasets: one forward per response, cached as sparse latents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sarm.evaluate import EvalReport, PairIndex, evaluate_arrays
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.types import Conversation, PreferenceGroup, responses_of

RowKey = tuple[str, str, int]


def response_rows(groups: Sequence[PreferenceGroup]) -> tuple[list[RowKey], list[Conversation]]:
    """Every response of every group as ``(group_id, role, index)`` and its conversation."""
    responses = responses_of(groups)
    return [r.key for r in responses], [r.conversation() for r in responses]


def response_conversations(
    groups: Sequence[PreferenceGroup],
) -> tuple[list[Conversation], dict[RowKey, int]]:
    """Every response as a conversation, and its row: ``(group_id, role, i) -> row``.

    The row mapping is what :meth:`sarm.evaluate.PairIndex.from_groups` takes.
    """
    keys, conversations = response_rows(groups)
    if not conversations:
        raise ValueError("the data holds no responses")
    return conversations, {key: row for row, key in enumerate(keys)}


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
    return ScoredResponses(
        keys, pooled.rewards, pooled.latents, pooled.n_tokens, pooled.truncated, pooled.hidden
    )


def dense_rewards(head: Head, hidden: np.ndarray) -> np.ndarray:
    """A dense baseline head's rewards over ``u_T [n, d]`` (the head's weights are ``[d]``)."""
    if head.size != hidden.shape[1]:
        raise ValueError(
            f"the baseline head has {head.size} weights but the hidden size is {hidden.shape[1]}"
        )
    return head.rewards(SparseLatents.from_dense(hidden))


def evaluate_model(
    model,
    groups: Sequence[PreferenceGroup],
    batch_size: int = 8,
    progress: bool = True,
    baseline: Head | None = None,
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
    base_r = dense_rewards(baseline, scored.hidden)
    return report, evaluate_arrays(base_r, index, n_groups=len(groups))
