"""Sparse pooled latents: the one structure every reward, metric and edit reads.

A SARM's backbone runs once per response; afterwards a response is just the few
dozen non-zero SAE latents ``z_T`` at its final end-of-turn token. A whole
dataset of them is a CSR matrix whose rows are examples (named by
``example_ids``) and whose columns are features. The model returns it, the
feature store stores and returns it, and :class:`sarm.head.Head` turns it into
rewards and contributions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int

__all__ = ["PooledLatents", "SparseLatents"]


@dataclass(eq=False)
class SparseLatents:
    """Pooled latents of ``n`` examples over ``d_sae`` features, stored as CSR rows.

    Row ``r`` is example ``example_ids[r]`` and holds the features
    ``indices[indptr[r]:indptr[r + 1]]`` with activations ``values[...]``.
    ``example_ids`` defaults to ``0..n-1``. The arrays are validated once and
    then treated as read-only.
    """

    indptr: Int[np.ndarray, " n_plus_1"]
    indices: Int[np.ndarray, " nnz"]
    values: Float[np.ndarray, " nnz"]
    d_sae: int
    example_ids: Int[np.ndarray, " n"] | None = None

    def __post_init__(self) -> None:
        self.indptr = _frozen(self.indptr, np.int64)
        self.indices = _frozen(self.indices, np.int32)
        self.values = _frozen(self.values, np.float32)
        self.d_sae = int(self.d_sae)
        self._check_structure()
        n = len(self.indptr) - 1
        ids = np.arange(n) if self.example_ids is None else self.example_ids
        self.example_ids = _frozen(ids, np.int64)
        if self.example_ids.shape != (n,):
            raise ValueError(f"example_ids must have {n} entries (one per row)")

    def _check_structure(self) -> None:
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be >= 1, got {self.d_sae}")
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

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_rows(
        cls,
        indices: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        d_sae: int,
        example_ids: np.ndarray | None = None,
    ) -> SparseLatents:
        """Build from per-example ``(feature ids, activations)`` arrays."""
        if len(indices) != len(values):
            raise ValueError("indices and values must list the same number of examples")
        lengths = np.array([len(i) for i in indices], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.concatenate(list(indices)) if len(indices) else np.empty(0)
        vals = np.concatenate(list(values)) if len(values) else np.empty(0)
        return cls(indptr, ids, vals, d_sae, example_ids)

    @classmethod
    def from_topk(
        cls, values: Float[np.ndarray, "n k"], indices: Int[np.ndarray, "n k"], d_sae: int
    ) -> SparseLatents:
        """Build from TopK output rows, dropping the kept entries that are exactly zero."""
        values = np.asarray(values, dtype=np.float32)
        indices = np.asarray(indices)
        if values.shape != indices.shape or values.ndim != 2:
            raise ValueError(f"values {values.shape} and indices {indices.shape} must be [n, k]")
        keep = values != 0
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        return cls(indptr, indices[keep], values[keep], d_sae)

    @classmethod
    def from_dense(cls, dense: Float[np.ndarray, "n d_sae"]) -> SparseLatents:
        """Build from a dense ``[n, d_sae]`` matrix (its non-zeros)."""
        dense = np.asarray(dense, dtype=np.float32)
        if dense.ndim != 2:
            raise ValueError(f"expected a [n, d_sae] matrix, got shape {dense.shape}")
        rows, cols = np.nonzero(dense)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))])
        return cls(indptr, cols, dense[rows, cols], dense.shape[1])

    # ------------------------------------------------------------------ shape
    @property
    def n(self) -> int:
        """Number of examples (rows)."""
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Number of stored non-zero activations."""
        return len(self.indices)

    def row(self, i: int) -> tuple[Int[np.ndarray, " k"], Float[np.ndarray, " k"]]:
        """``(feature ids, activations)`` of row ``i``."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.indices[lo:hi], self.values[lo:hi]

    def row_of(self, example_id: int) -> int:
        """The row holding ``example_id`` (LookupError when absent)."""
        ids = self.example_ids
        pos = int(np.searchsorted(ids, example_id)) if _is_sorted(ids) else -1
        if pos < 0 or pos >= len(ids) or ids[pos] != example_id:
            found = np.flatnonzero(ids == example_id)
            if not len(found):
                raise LookupError(f"example {example_id} is not in these latents")
            pos = int(found[0])
        return pos

    def take(self, rows: Sequence[int] | np.ndarray) -> SparseLatents:
        """The latents of ``rows`` (in the order given), keeping their example ids."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseLatents(
            indptr, self.indices[pos], self.values[pos], self.d_sae, self.example_ids[rows]
        )

    @functools.cached_property
    def row_ids(self) -> Int[np.ndarray, " nnz"]:
        """The row of every stored non-zero (computed once)."""
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))

    def column(self, feature: int) -> tuple[Int[np.ndarray, " m"], Float[np.ndarray, " m"]]:
        """``(rows, activations)`` where ``feature`` is active (one entry per row)."""
        starts, rows, values = self._columns
        lo, hi = starts[feature], starts[feature + 1]
        return rows[lo:hi].astype(np.int64), values[lo:hi]

    def csc(
        self,
    ) -> tuple[Int[np.ndarray, " d_plus_1"], Int[np.ndarray, " nnz"], Float[np.ndarray, " nnz"]]:
        """The feature-major (CSC) view, built once: ``(starts, rows, values)``.

        Feature ``f``'s non-zeros are ``rows[starts[f]:starts[f + 1]]`` (each
        row once, ascending) with ``values[...]``: contiguous, so reading a few
        features' columns touches only their entries.
        """
        return self._columns

    @functools.cached_property
    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CSC view: column starts, and every non-zero's row and value in column order."""
        order = np.argsort(self.indices, kind="stable")
        counts = np.bincount(self.indices, minlength=self.d_sae)
        starts = np.concatenate([[0], np.cumsum(counts)])
        row_type = np.int32 if self.n < 2**31 else np.int64  # half the memory and bandwidth
        rows, values = self.row_ids[order].astype(row_type), self.values[order]
        for a in (starts, rows, values):
            a.flags.writeable = False
        return starts, rows, values

    def warm(self) -> SparseLatents:
        """Build the row and column indexes now, so that the first edit is instant."""
        _ = self._columns
        return self

    def dense(self) -> Float[np.ndarray, "n d_sae"]:
        """A dense ``[n, d_sae]`` copy (small data only)."""
        out = np.zeros((self.n, self.d_sae), dtype=np.float32)
        out[self.row_ids, self.indices] = self.values
        return out

    def __repr__(self) -> str:
        return f"SparseLatents(n={self.n}, d_sae={self.d_sae}, nnz={self.nnz})"


def _frozen(values: object, dtype: type) -> np.ndarray:
    out = np.array(values, dtype=dtype, copy=True).reshape(-1)
    out.flags.writeable = False
    return out


def _is_sorted(ids: np.ndarray) -> bool:
    return len(ids) < 2 or bool(np.all(np.diff(ids) > 0))


@dataclass(eq=False)
class PooledLatents:
    """What one pass of a SARM over many conversations returns, in input order.

    ``latents`` holds ``z_T`` of every conversation; ``rewards`` are the head's
    rewards of those latents; ``hidden`` is the standardised ``u_T`` when it
    was asked for (for dense baselines), from the same forward pass.
    """

    latents: SparseLatents
    rewards: Float[np.ndarray, " n"]
    n_tokens: Int[np.ndarray, " n"]
    truncated: np.ndarray
    hidden: Float[np.ndarray, "n d"] | None = None
    # With an EvidenceSpec: sarm.explain.evidence.ExampleEvidence per row, and the
    # pass's TokenCounters (not split by take(): they count the whole pass).
    evidence: list | None = None
    counters: object | None = None

    def __post_init__(self) -> None:
        n = self.latents.n
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        self.n_tokens = np.asarray(self.n_tokens, dtype=np.int64)
        self.truncated = np.asarray(self.truncated, dtype=bool)
        for name in ("rewards", "n_tokens", "truncated"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"PooledLatents.{name} must have {n} entries (one per row)")
        if self.hidden is not None and len(self.hidden) != n:
            raise ValueError(f"PooledLatents.hidden must have {n} rows")

    @property
    def n(self) -> int:
        return self.latents.n

    def take(self, rows: Sequence[int] | np.ndarray) -> PooledLatents:
        """The results of ``rows`` (in the order given)."""
        rows = np.asarray(rows, dtype=np.int64)
        hidden = None if self.hidden is None else self.hidden[rows]
        return PooledLatents(
            self.latents.take(rows),
            self.rewards[rows],
            self.n_tokens[rows],
            self.truncated[rows],
            hidden,
            None if self.evidence is None else [self.evidence[r] for r in rows.tolist()],
        )
