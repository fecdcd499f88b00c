"""Example rows of a shift: index arrays or masks, checked, and the weight vector."""

from __future__ import annotations

import numpy as np


def as_rows(rows: object, n: int, what: str) -> np.ndarray:
    """Sorted example rows from an index array or a boolean mask of length ``n``."""
    arr = np.asarray(rows)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"{what}: a boolean mask needs {n} entries, got shape {arr.shape}")
        arr = np.flatnonzero(arr)
    if arr.size == 0:
        raise ValueError(f"{what} is empty: it selects no examples")
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be row numbers or a boolean mask, got {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{what} has rows outside 0..{n - 1}")
    out = np.unique(arr.astype(np.int64))
    if len(out) != len(arr):
        raise ValueError(f"{what} lists {len(arr) - len(out)} rows more than once")
    return out


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[rows] = True
    return out


def _disjoint(target: np.ndarray, complement: np.ndarray) -> None:
    shared = np.intersect1d(target, complement)
    if len(shared):
        raise ValueError(
            f"target and complement share {len(shared)} examples (first row {shared[0]}); "
            "use 'rest' or a disjoint complement"
        )


def _weights(weight: np.ndarray, d_sae: int) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != (d_sae,):
        raise ValueError(f"weight must have shape ({d_sae},), got {w.shape}")
    return w
