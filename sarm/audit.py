"""Dataset audits over stored arrays: pairs, misrankings, error attribution, edit previews.

Everything here is numpy and pandas over what a feature store already holds
(the examples frame, the pooled sparse latents, a reward vector), so the
dashboard answers "where is the model wrong, and which features carry the
error" without running the model.

Conventions follow :mod:`sarm.evaluate`: a pair is correct when
``r(chosen) > r(rejected)`` strictly; reward vectors are indexed by the row of
an example in the examples frame (ordered by ``example_id``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sarm.evaluate import EvalReport, PairIndex, evaluate_arrays, pair_correct, subset_names
from sarm.head import Head
from sarm.latents import SparseLatents


def pair_table(rewards: np.ndarray, index: PairIndex, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: ids, subset, both rewards, margin and whether it is ranked right."""
    rewards = np.asarray(rewards, dtype=np.float64)
    ids = frame["example_id"].to_numpy(np.int64)
    chosen, rejected = rewards[index.chosen_row], rewards[index.rejected_row]
    return pd.DataFrame(
        {
            "pair": np.arange(index.n_pairs),
            "group_id": np.asarray(index.group_ids, dtype=object)[index.group]
            if index.n_pairs
            else [],
            "subset": np.asarray(index.subset_names, dtype=object)[index.subset]
            if index.n_pairs
            else [],
            "chosen_id": ids[index.chosen_row],
            "rejected_id": ids[index.rejected_row],
            "reward_chosen": chosen,
            "reward_rejected": rejected,
            "margin": chosen - rejected,
            "correct": pair_correct(rewards, index),
        }
    )


def misranked_pairs(
    rewards: np.ndarray, index: PairIndex, frame: pd.DataFrame, limit: int | None = None
) -> pd.DataFrame:
    """Pairs ranked wrong (ties included), the most negative margin first."""
    table = pair_table(rewards, index, frame)
    wrong = table[~table["correct"]].sort_values(["margin", "pair"], kind="stable")
    return (wrong if limit is None else wrong.head(limit)).reset_index(drop=True)


def error_feature_margins(
    latents: SparseLatents, head: Head, index: PairIndex, *, rewards: np.ndarray | None = None
) -> pd.DataFrame:
    """Each feature's share of the margin summed over misranked pairs.

    For the misranked pairs ``E``: ``margin_sum_i = sum_{p in E} w_i (z^c_i - z^r_i)``;
    the bias cancels, so ``sum_i margin_sum_i = sum_{p in E} margin_p``. Rows
    come sorted by ``margin_sum``, most negative (pushing hardest towards the
    wrong answer) first; features that never differ in an error are left out.
    ``share`` is ``margin_sum / sum(margins)``; ``n_responses`` counts the
    responses of misranked pairs in which the feature is active.
    """
    w = head.weights.astype(np.float64)
    if rewards is None:
        rewards = head.rewards(latents)
    wrong = ~pair_correct(rewards, index)
    n = latents.n
    n_c = np.bincount(index.chosen_row[wrong], minlength=n)[:n]
    n_r = np.bincount(index.rejected_row[wrong], minlength=n)[:n]
    rows = latents.row_ids
    terms = head.contributions(latents) * (n_c - n_r)[rows]
    sums = np.bincount(latents.indices, weights=terms, minlength=latents.d_sae)
    involved = ((n_c + n_r) > 0)[rows].astype(np.float64)
    counts = np.bincount(latents.indices, weights=involved, minlength=latents.d_sae)
    total = float((rewards[index.chosen_row] - rewards[index.rejected_row])[wrong].sum())
    keep = np.flatnonzero(sums != 0)
    table = pd.DataFrame(
        {
            "feature_id": keep,
            "margin_sum": sums[keep],
            "mean_per_error": sums[keep] / max(int(wrong.sum()), 1),
            "share": sums[keep] / total if total else np.nan,
            "n_responses": counts[keep].astype(np.int64),
            "weight": w[keep],
        }
    )
    table.attrs.update(n_errors=int(wrong.sum()), total_margin=total)
    return table.sort_values(["margin_sum", "feature_id"], kind="stable").reset_index(drop=True)


def reward_frame(frame: pd.DataFrame, rewards: np.ndarray) -> pd.DataFrame:
    """``example_id, subset, role, kind, reward`` for distribution plots."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if len(rewards) != len(frame):
        raise ValueError(f"{len(rewards)} rewards for {len(frame)} examples")
    return pd.DataFrame(
        {
            "example_id": frame["example_id"].to_numpy(),
            "subset": subset_names(frame).to_numpy(),
            "role": frame["role"].to_numpy(),
            "kind": frame["kind"].to_numpy(),
            "reward": rewards,
        }
    )


def subset_accuracy(
    rewards_before: np.ndarray, rewards_after: np.ndarray | None, index: PairIndex
) -> pd.DataFrame:
    """Per-subset ``n_pairs, accuracy_before`` (and ``accuracy_after, change``)."""
    before = evaluate_arrays(rewards_before, index).per_subset
    table = pd.DataFrame(
        {
            "subset": list(before),
            "n_pairs": [v["n_pairs"] for v in before.values()],
            "accuracy_before": [v["accuracy"] for v in before.values()],
        }
    )
    if rewards_after is not None:
        after = evaluate_arrays(rewards_after, index).per_subset
        table["accuracy_after"] = [after[s]["accuracy"] for s in table["subset"]]
        table["change"] = table["accuracy_after"] - table["accuracy_before"]
    return table


@dataclass
class EditPreview:
    """Rewards and metrics of a dataset before and after head-weight overrides."""

    rewards_before: np.ndarray
    rewards_after: np.ndarray
    before: EvalReport
    after: EvalReport
    flipped: np.ndarray  # pair positions whose correctness changed

    def per_subset(self) -> pd.DataFrame:
        rows = []
        for name, b in self.before.per_subset.items():
            a = self.after.per_subset[name]["accuracy"]
            rows.append((name, b["n_pairs"], b["accuracy"], a, a - b["accuracy"]))
        cols = ["subset", "n_pairs", "accuracy_before", "accuracy_after", "change"]
        return pd.DataFrame(rows, columns=cols)

    def flipped_table(self, index: PairIndex, frame: pd.DataFrame) -> pd.DataFrame:
        """The flipped pairs: ids, margins before and after, ``fixed`` or ``broken``."""
        after = pair_table(self.rewards_after, index, frame).iloc[self.flipped]
        before = self.rewards_before
        out = after.drop(columns=["reward_chosen", "reward_rejected"]).rename(
            columns={"margin": "margin_after"}
        )
        out.insert(
            5,
            "margin_before",
            before[index.chosen_row[self.flipped]] - before[index.rejected_row[self.flipped]],
        )
        out["change"] = np.where(out.pop("correct"), "fixed", "broken")
        return out.reset_index(drop=True)


def preview_edit(head: Head, latents: SparseLatents, index: PairIndex) -> EditPreview:
    """Metrics under ``head``'s overrides against its base head (no model run)."""
    before = head.base().rewards(latents)
    after = head.rewards(latents)
    flipped = np.flatnonzero(pair_correct(before, index) != pair_correct(after, index))
    return EditPreview(
        before, after, evaluate_arrays(before, index), evaluate_arrays(after, index), flipped
    )


__all__ = [
    "EditPreview",
    "error_feature_margins",
    "misranked_pairs",
    "pair_table",
    "preview_edit",
    "reward_frame",
    "subset_accuracy",
]
