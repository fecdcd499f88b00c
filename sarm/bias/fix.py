"""A head edit that stops paying for a bias, and its before/after figures.

The features proposed are those carrying the largest positive share of an
operator's mean delta-r on the *dev* split (:func:`sarm.bias.counterfactual.
counterfactual_shares`), taken in order until their shares add up to
``coverage`` or ``max_features`` are taken. The edit is one
:class:`~sarm.interventions.Intervention` (``scale:FACTOR`` on those
features; ``FACTOR = 0`` zeroes them), applied through
:func:`sarm.interventions.edit_weights` and :meth:`sarm.head.Head.take`, so the
result is a head with overrides like the editor's: it is saved and exported
like any head. It is judged on a held-out split (:func:`accuracy_change`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sarm.evaluate import PairIndex, flipped_pairs, head_summary, pair_correct
from sarm.head import Head
from sarm.interventions import Intervention, edit_weights
from sarm.latents import SparseLatents
from sarm.types import PreferenceGroup

__all__ = ["accuracy_change", "apply_fix", "carriers"]


def carriers(shares: pd.DataFrame, coverage: float = 0.8, max_features: int = 5) -> list[int]:
    """Features with a positive share, largest first, until ``coverage`` of delta-r is reached."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if max_features < 1:
        raise ValueError(f"max_features must be >= 1, got {max_features}")
    if not shares.attrs.get("mean_delta", 0) > 0:
        return []  # no payment to remove
    out, covered = [], 0.0
    for row in shares.itertuples(index=False):
        if row.share <= 0 or covered >= coverage or len(out) >= max_features:
            break
        out.append(int(row.feature_id))
        covered += float(row.share)
    return out


def apply_fix(
    head: Head, features: Sequence[int], factor: float = 0.0
) -> tuple[Head, Intervention]:
    """``head`` with ``scale:factor`` on ``features`` (as overrides) and that intervention."""
    item = Intervention("scale", tuple(int(f) for f in features), float(factor))
    weights = edit_weights(head.weights, [item])
    return head.take(weights, item.features), item


def accuracy_change(
    before: Head,
    after: Head,
    latents: SparseLatents,
    index: PairIndex,
    groups: Sequence[PreferenceGroup],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """Pairwise accuracy (overall, per source / category, 95% intervals) and flipped pairs."""
    r0, r1 = before.rewards(latents), after.rewards(latents)
    flipped = flipped_pairs(r0, r1, index)
    now_right = pair_correct(r1, index)[flipped]
    return {
        "before": head_summary(r0, index, groups, resamples, seed),
        "after": head_summary(r1, index, groups, resamples, seed),
        "flipped": {
            "n": len(flipped),
            "fixed": int(now_right.sum()),
            "broken": int((~now_right).sum()),
        },
        "changed_weights": {
            str(f): [float(before.weight_of(f)), float(after.weight_of(f))]
            for f in np.asarray(sorted(after.changed_weights(before)))
        },
    }
