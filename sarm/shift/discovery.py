"""Feature discovery: rank features by how they separate a target set from a complement."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import get_args

import numpy as np
import pandas as pd

from sarm.configs import Direction, OrderBy
from sarm.latents import SparseLatents
from sarm.shift.rows import _disjoint, _mask, _weights, as_rows

DIRECTIONS: tuple[str, ...] = get_args(Direction)
ORDERS: tuple[str, ...] = get_args(OrderBy)
Labels = Mapping[int, str] | Callable[[list[int]], Mapping[int, str]] | None


@dataclass(frozen=True)
class _SetSums:
    """Per-feature sums over the stored non-zeros of one set of rows."""

    n: int
    count: np.ndarray
    total: np.ndarray
    abs_total: np.ndarray

    @classmethod
    def of(cls, latents: SparseLatents, mask: np.ndarray) -> _SetSums:
        sel = mask[latents.row_ids]
        idx, vals = latents.indices[sel], latents.values[sel].astype(np.float64)
        d = latents.d_sae
        return cls(
            int(mask.sum()),
            np.bincount(idx, minlength=d),
            np.bincount(idx, weights=vals, minlength=d),
            np.bincount(idx, weights=np.abs(vals), minlength=d),
        )

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.n if self.n else np.full(len(self.total), np.nan)


def _consistency(
    latents: SparseLatents, target: np.ndarray, mean_c: np.ndarray, diff: np.ndarray
) -> np.ndarray:
    """Fraction of target rows whose activation lies strictly on the target side of
    the complement mean (inactive rows count with activation 0)."""
    mask = _mask(target, latents.n)
    sel = mask[latents.row_ids]
    idx, vals = latents.indices[sel], latents.values[sel].astype(np.float64)
    side = np.sign(diff)
    ok = (np.sign(vals - mean_c[idx]) == side[idx]) & (side[idx] != 0)
    active_ok = np.bincount(idx, weights=ok, minlength=latents.d_sae)
    count = np.bincount(idx, minlength=latents.d_sae)
    inactive_ok = (len(target) - count) * ((np.sign(-mean_c) == side) & (side != 0))
    return (active_ok + inactive_ok) / len(target)


def _salience(latents: SparseLatents, target: np.ndarray, roles: np.ndarray | None) -> np.ndarray:
    """SAFER salience within the target, as the store defines it:
    ``(a_c - a_r) / (a_c + a_r + 2 m)``, ``m`` the target mean; NaN where undefined."""
    d = latents.d_sae
    if roles is None:
        return np.full(d, np.nan)
    roles = np.asarray(roles)
    if roles.shape != (latents.n,):
        raise ValueError(f"roles must have one entry per example ({latents.n}), got {roles.shape}")
    in_t = _mask(target, latents.n)
    chosen = _SetSums.of(latents, in_t & (roles == "chosen"))
    rejected = _SetSums.of(latents, in_t & (roles == "rejected"))
    if not chosen.n or not rejected.n:
        return np.full(d, np.nan)
    a_c, a_r = chosen.mean, rejected.mean
    m = _SetSums.of(latents, in_t).mean
    denom = a_c + a_r + 2 * m
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom != 0, (a_c - a_r) / denom, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``inf`` where only the denominator is 0 and NaN where both are."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num > 0, np.inf, np.nan))


def feature_contrast(
    latents: SparseLatents,
    target: object,
    complement: object,
    *,
    weight: np.ndarray | None = None,
    roles: np.ndarray | None = None,
) -> pd.DataFrame:
    """Contrastive statistics of every feature active in the target or the complement.

    Columns (T = target rows, C = complement rows, zeros included in means):
    ``feature_id, score, mean_target, mean_complement, mean_diff, consistency,
    freq_target, freq_complement, freq_ratio, mean_abs_target, mean_abs_complement,
    selectivity, salience, weight, contribution_target, contribution_complement``.
    ``score = |mean_diff| * consistency``; ``freq_ratio`` is Laplace-smoothed
    ``((n_T + 1) / (|T| + 2)) / ((n_C + 1) / (|C| + 2))``; ``selectivity`` is
    ``mean |z| on T / mean |z| on C``, the selectivity ratio of a weight edit of
    that feature alone (``inf`` when it never fires on C).
    """
    target = as_rows(target, latents.n, "target")
    complement = as_rows(complement, latents.n, "complement")
    _disjoint(target, complement)
    t = _SetSums.of(latents, _mask(target, latents.n))
    c = _SetSums.of(latents, _mask(complement, latents.n))
    w = np.zeros(latents.d_sae) if weight is None else _weights(weight, latents.d_sae)
    diff = t.mean - c.mean
    consistency = _consistency(latents, target, c.mean, diff)
    cols = {
        "feature_id": np.arange(latents.d_sae),
        "score": np.abs(diff) * consistency,
        "mean_target": t.mean,
        "mean_complement": c.mean,
        "mean_diff": diff,
        "consistency": consistency,
        "freq_target": t.count / t.n,
        "freq_complement": c.count / c.n,
        "freq_ratio": ((t.count + 1) / (t.n + 2)) / ((c.count + 1) / (c.n + 2)),
        "mean_abs_target": t.abs_total / t.n,
        "mean_abs_complement": c.abs_total / c.n,
        "selectivity": _ratio(t.abs_total / t.n, c.abs_total / c.n),
        "salience": _salience(latents, target, roles),
        "weight": w,
        "contribution_target": w * t.mean,
        "contribution_complement": w * c.mean,
    }
    active = (t.count + c.count) > 0
    return pd.DataFrame({k: v[active] for k, v in cols.items()}).reset_index(drop=True)


def _order_key(frame: pd.DataFrame, order_by: str) -> pd.Series:
    if order_by not in ORDERS:
        raise ValueError(f"order_by must be one of {list(ORDERS)}, got {order_by!r}")
    column = {"contribution": "contribution_target"}.get(order_by, order_by)
    key = frame[column]
    return key.abs() if order_by in ("mean_diff", "salience", "contribution") else key


def _direction_mask(frame: pd.DataFrame, direction: str) -> pd.Series:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    if direction == "both":
        return pd.Series(True, index=frame.index)
    t, c = frame["mean_abs_target"], frame["mean_abs_complement"]
    return t > c if direction == "target" else t < c


def _label_map(labels: Labels, ids: list[int]) -> Mapping[int, str]:
    if labels is None or not ids:
        return {}
    return labels(ids) if callable(labels) else labels


def discover_features(
    latents: SparseLatents,
    target: object,
    complement: object,
    *,
    weight: np.ndarray | None = None,
    roles: np.ndarray | None = None,
    labels: Labels = None,
    direction: Direction = "target",
    order_by: str = "score",
    limit: int | None = 20,
) -> pd.DataFrame:
    """The features that separate ``target`` from ``complement``, best first.

    ``direction="target"`` keeps features larger in magnitude on the target
    (``mean |z|``), ``"complement"`` the opposite, ``"both"`` all. Rows are sorted
    by ``order_by`` (one of :data:`ORDERS`; ``mean_diff``, ``salience`` and
    ``contribution`` by absolute value) descending, ties by feature id; ``labels``
    (a mapping, or a callable such as ``store.labels_for``) fills ``label``.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    frame = feature_contrast(latents, target, complement, weight=weight, roles=roles)
    frame = frame[_direction_mask(frame, direction)]
    key = _order_key(frame, order_by).fillna(-np.inf)
    order = np.lexsort((frame["feature_id"].to_numpy(), -key.to_numpy()))
    frame = frame.iloc[order[:limit] if limit is not None else order].reset_index(drop=True)
    names = _label_map(labels, [int(f) for f in frame["feature_id"]])
    frame["label"] = [names.get(int(f)) for f in frame["feature_id"]]
    return frame
