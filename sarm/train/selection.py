"""Measures used to choose between trained SAEs: how concentrated a feature's examples are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch


def top_rows(values: torch.Tensor, indices: torch.Tensor, feature: int, n: int) -> np.ndarray:
    """Rows where ``feature`` has its ``n`` largest kept values (fewer if it is rarer)."""
    hit_rows, hit_cols = (indices == feature).nonzero(as_tuple=True)
    if hit_rows.numel() == 0:
        return np.empty(0, dtype=np.int64)
    acts = values[hit_rows, hit_cols].float()
    order = torch.argsort(acts, descending=True)[:n]
    return hit_rows[order].numpy()


def feature_purity(
    values: torch.Tensor,
    indices: torch.Tensor,
    features: Sequence[int],
    row_labels: Sequence[str],
    n: int = 20,
) -> list[float | None]:
    """Per feature: the share of its top-``n`` rows that carry their most common label.

    1.0 means every top example comes from one label (one source, one category);
    ``None`` marks a feature that is never active on these rows.
    """
    labels = np.asarray(row_labels, dtype=object)
    out: list[float | None] = []
    for f in features:
        rows = top_rows(values, indices, int(f), n)
        if rows.size == 0:
            out.append(None)
            continue
        out.append(Counter(labels[rows]).most_common(1)[0][1] / rows.size)
    return out


def mean_purity(purities: Sequence[float | None]) -> float:
    """Mean over the features that fire at all (0.0 when none does)."""
    seen = [p for p in purities if p is not None]
    return float(np.mean(seen)) if seen else 0.0
