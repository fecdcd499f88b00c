"""Cached sparse latents and fast reward recomputation under head edits.

The expensive part of a SARM (the backbone) runs once; afterwards every reward
is ``r = z_T . w + b`` over a few dozen non-zeros per example. This module holds
the pooled latents of a whole dataset as CSR arrays and recomputes rewards after
weight edits from the touched columns only, so that moving one slider costs
microseconds even at hundreds of thousands of examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SparseLatents:
    """Pooled latents of ``n`` examples over ``d_sae`` features, stored as CSR."""

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [nnz], feature ids
    values: np.ndarray  # float32 [nnz], activations
    d_sae: int
    _csc: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.indptr = np.ascontiguousarray(self.indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(self.indices, dtype=np.int32)
        self.values = np.ascontiguousarray(self.values, dtype=np.float32)
        if self.indptr.ndim != 1 or len(self.indptr) < 1 or self.indptr[0] != 0:
            raise ValueError("indptr must be a 1-D array starting at 0")
        if np.any(np.diff(self.indptr) < 0) or self.indptr[-1] != len(self.indices):
            raise ValueError("indptr must be non-decreasing and end at len(indices)")
        if len(self.indices) != len(self.values):
            raise ValueError("indices and values must have the same length")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= self.d_sae):
            raise ValueError(f"feature ids must lie in 0..{self.d_sae - 1}")
        if not np.isfinite(self.values).all():
            raise ValueError("latent values must be finite")

    @classmethod
    def from_rows(
        cls, indices: Sequence[np.ndarray], values: Sequence[np.ndarray], d_sae: int
    ) -> SparseLatents:
        """Build from per-example ``(feature ids, activations)`` arrays."""
        if len(indices) != len(values):
            raise ValueError("indices and values must list the same number of examples")
        lengths = np.array([len(i) for i in indices], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        cat = np.concatenate if len(indices) else (lambda _: np.empty(0))
        return cls(indptr, cat(list(indices)), cat(list(values)), d_sae)

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.indices[lo:hi], self.values[lo:hi]

    def row_ids(self) -> np.ndarray:
        """The example (row) of every stored non-zero."""
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))

    def rewards(self, weight: np.ndarray, bias: float = 0.0) -> np.ndarray:
        """``z . w + b`` for every example (float64)."""
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != (self.d_sae,):
            raise ValueError(f"weight must have shape ({self.d_sae},), got {w.shape}")
        contrib = self.values.astype(np.float64) * w[self.indices]
        return np.bincount(self.row_ids(), weights=contrib, minlength=self.n) + float(bias)

    def column(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """``(example rows, activations)`` where ``feature`` is active."""
        order, starts, rows = self._columns()
        lo, hi = starts[feature], starts[feature + 1]
        return rows[lo:hi], self.values[order[lo:hi]]

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._csc is None:
            order = np.argsort(self.indices, kind="stable")
            counts = np.bincount(self.indices, minlength=self.d_sae)
            starts = np.concatenate([[0], np.cumsum(counts)])
            self._csc = (order, starts, self.row_ids()[order])
        return self._csc

    def dense(self) -> np.ndarray:
        """A dense ``[n, d_sae]`` copy (small data only)."""
        out = np.zeros((self.n, self.d_sae), dtype=np.float32)
        out[self.row_ids(), self.indices] = self.values
        return out


class RewardEditor:
    """Rewards of a dataset under edited head weights, updated column by column."""

    def __init__(self, latents: SparseLatents, weight: np.ndarray, bias: float = 0.0):
        self.latents = latents
        self.base_weight = np.asarray(weight, dtype=np.float64).copy()
        self.bias = float(bias)
        self.base_rewards = latents.rewards(self.base_weight, self.bias)

    def rewards(self, overrides: Mapping[int, float]) -> np.ndarray:
        """Rewards with ``weight[f] = overrides[f]`` (all other weights unchanged)."""
        out = self.base_rewards.copy()
        for feature, new in overrides.items():
            delta = float(new) - self.base_weight[int(feature)]
            if delta != 0.0:
                rows, vals = self.latents.column(int(feature))
                out[rows] += delta * vals.astype(np.float64)  # one entry per row
        return out

    def weight(self, overrides: Mapping[int, float]) -> np.ndarray:
        w = self.base_weight.copy()
        for feature, new in overrides.items():
            w[int(feature)] = float(new)
        return w
