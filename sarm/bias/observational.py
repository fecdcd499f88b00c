"""Observational bias audit: does the reward rise with a property, and which features pay?

Over a dataset's responses (rewards ``r``, pooled latents ``z``, a property
``p`` per response):

- ``reward_corr``: Pearson correlation of ``r`` with ``p`` over all responses,
  95% interval from Fisher's z;
- ``within_prompt_effect``: over preference pairs, the slope and correlation of
  the margin ``r(chosen) - r(rejected)`` on the property difference
  ``p(chosen) - p(rejected)``; 95% intervals from a bootstrap over prompts
  (groups). Comparing responses to the same prompt removes what the prompt
  does to both;
- ``top_features``: the reward's least-squares slope on the property splits
  exactly over features, because ``r = sum_i c_i + b``:
  ``beta = cov(r, p) / var(p) = sum_i cov(c_i, p) / var(p) = sum_i beta_i``.
  A feature's ``share`` is ``beta_i / beta``: the fraction of the
  property-correlated reward it carries. Shares over all features sum to 1;
  a negative share works against the bias. Features come ranked by share,
  largest first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sarm.bias.stats import cluster_bootstrap, fisher_interval, pearson, slope
from sarm.evaluate import PairIndex
from sarm.head import Head
from sarm.latents import SparseLatents

__all__ = [
    "MIN_SUPPORT",
    "feature_shares",
    "property_audit",
    "reward_correlation",
    "within_prompt_effect",
]

#: fewer responses with the property (or pairs differing in it) than this: no figure
MIN_SUPPORT = 20


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def reward_correlation(values: np.ndarray, rewards: np.ndarray) -> dict[str, object]:
    """``{corr, ci95, n}``: Pearson correlation of reward with the property over responses."""
    r = pearson(values, rewards)
    return {"corr": _finite(r), "ci95": fisher_interval(r, len(values)), "n": len(values)}


def within_prompt_effect(
    values: np.ndarray,
    rewards: np.ndarray,
    index: PairIndex,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """Margin on property difference over pairs: ``{slope, slope_ci95, corr, ci95, ...}``.

    ``n_pairs`` counts all pairs, ``n_differing`` those whose responses differ in
    the property (only they carry information about the effect); with fewer
    than :data:`MIN_SUPPORT` of them the figures are None.
    """
    values, rewards = np.asarray(values, np.float64), np.asarray(rewards, np.float64)
    dp = values[index.chosen_row] - values[index.rejected_row]
    dm = rewards[index.chosen_row] - rewards[index.rejected_row]
    n_differing = int((dp != 0).sum())
    if n_differing < MIN_SUPPORT:
        return {
            "slope": None,
            "slope_ci95": None,
            "corr": None,
            "ci95": None,
            "n_pairs": index.n_pairs,
            "n_differing": n_differing,
        }
    boot = cluster_bootstrap(dp, dm, index.group, n_resamples, seed)
    return {
        "slope": _finite(slope(dp, dm)),
        "slope_ci95": boot["slope"],
        "corr": _finite(pearson(dp, dm)),
        "ci95": boot["corr"],
        "n_pairs": index.n_pairs,
        "n_differing": n_differing,
    }


def feature_shares(values: np.ndarray, latents: SparseLatents, head: Head) -> pd.DataFrame:
    """Every active feature's ``beta_i`` (reward slope on the property it carries) and share.

    Columns ``feature_id, beta, share, weight, n_active``, ranked by share
    (largest first); ``attrs['beta']`` is the total slope ``sum_i beta_i``.
    """
    p = np.asarray(values, np.float64)
    if len(p) != latents.n:
        raise ValueError(f"{len(p)} property values for {latents.n} responses")
    var = p.var()
    c = head.contributions(latents)
    centred = (p - p.mean())[latents.row_ids]
    cov = np.bincount(latents.indices, weights=c * centred, minlength=latents.d_sae) / latents.n
    active = np.bincount(latents.indices, minlength=latents.d_sae)
    keep = np.flatnonzero(active)
    beta = cov[keep] / var if var > 0 else np.full(len(keep), np.nan)
    total = float(beta.sum()) if var > 0 else math.nan
    table = pd.DataFrame(
        {
            "feature_id": keep,
            "beta": beta,
            "share": beta / total if total else np.nan,
            "weight": head.weights[keep].astype(np.float64),
            "n_active": active[keep],
        }
    )
    table.attrs["beta"] = total
    return table.sort_values(["share", "feature_id"], ascending=[False, True]).reset_index(
        drop=True
    )


def top_rows(table: pd.DataFrame, names: Mapping[int, str], limit: int) -> list[dict]:
    """The first ``limit`` rows of a share table as ``{id, explanation, share, ...}`` dicts."""
    out = []
    for row in table.head(limit).itertuples(index=False):
        out.append(
            {
                "id": int(row.feature_id),
                "explanation": names.get(int(row.feature_id), ""),
                "share": _finite(float(row.share)),
                "weight": float(row.weight),
            }
        )
    return out


def property_audit(
    values: np.ndarray,
    latents: SparseLatents,
    head: Head,
    index: PairIndex,
    names: Mapping[int, str] | None = None,
    top: int = 5,
    seed: int = 0,
) -> dict[str, object]:
    """``reward_corr``, ``within_prompt_effect`` and ``top_features`` of one property.

    With fewer than :data:`MIN_SUPPORT` responses having the property (non-zero
    values), the correlation, the slope and the features are not reported.
    """
    rewards = head.rewards(latents)
    n_nonzero = int(np.count_nonzero(values))
    enough = n_nonzero >= MIN_SUPPORT
    shares = feature_shares(values, latents, head) if enough else None
    corr = reward_correlation(values, rewards)
    if not enough:
        corr = {"corr": None, "ci95": None, "n": len(values)}
    return {
        "mean": float(np.mean(values)),
        "n_nonzero": n_nonzero,
        "reward_corr": corr,
        "within_prompt_effect": within_prompt_effect(values, rewards, index, seed=seed),
        "reward_slope": _finite(shares.attrs["beta"]) if enough else None,
        "top_features": top_rows(shares, names or {}, top) if enough else [],
    }
