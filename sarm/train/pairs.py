"""Preference pairs for head training: validation, connected groups and the train/val split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sarm.train.latents import LatentRows


def check_pairs(
    chosen_row: object, rejected_row: object, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate pair index arrays against ``n_rows`` responses; return them as long tensors."""
    c, r = _index_array("chosen_row", chosen_row), _index_array("rejected_row", rejected_row)
    if c.numel() != r.numel():
        raise ValueError(f"chosen_row has {c.numel()} entries but rejected_row has {r.numel()}")
    if c.numel() == 0:
        raise ValueError("no preference pairs: chosen_row and rejected_row are empty")
    for name, t in (("chosen_row", c), ("rejected_row", r)):
        bad = (t < 0) | (t >= n_rows)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"{name}[{i}]={int(t[i])} is out of range for {n_rows} latent rows")
    same = c == r
    if same.any():
        raise ValueError(
            f"pair {int(same.nonzero()[0])} compares row {int(c[same][0])} with itself"
        )
    return c, r


def _index_array(name: str, x: object) -> torch.Tensor:
    arr = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer row numbers, got dtype {arr.dtype}")
    return torch.from_numpy(arr.astype(np.int64).reshape(-1))


def pair_groups(chosen: torch.Tensor, rejected: torch.Tensor) -> np.ndarray:
    """Group id per pair: pairs that share a response (directly or via others) share a group."""
    parent = np.arange(int(max(chosen.max(), rejected.max())) + 1)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    for a, b in zip(chosen.tolist(), rejected.tolist(), strict=True):
        parent[find(a)] = find(b)
    return np.array([find(a) for a in chosen.tolist()])


def split_pairs(
    groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pair positions for ``(train, val)``; whole groups go to one side, about ``val_fraction`` to val."""
    n = len(groups)
    if val_fraction == 0.0:
        return np.arange(n), np.empty(0, dtype=np.int64)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise ValueError(
            "all pairs form one connected group, so no validation split is possible; set val_fraction=0"
        )
    order = np.random.default_rng(seed).permutation(uniq)
    sizes = np.array([(groups == g).sum() for g in order])
    n_val_groups = int(
        np.clip(np.searchsorted(np.cumsum(sizes), val_fraction * n) + 1, 1, len(uniq) - 1)
    )
    is_val = np.isin(groups, order[:n_val_groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def balanced_pair_weights(labels: object) -> np.ndarray:
    """One weight per pair so that every label (a category, a source) weighs the same.

    Weights have mean 1: a label with ``n_c`` of ``n`` pairs among ``C`` labels gets
    ``n / (C * n_c)`` per pair.
    """
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("balanced_pair_weights needs one label per pair")
    _, inverse, counts = np.unique(arr.astype(str), return_inverse=True, return_counts=True)
    return (arr.size / (len(counts) * counts))[inverse]


def check_pair_weights(weights: object | None, n_pairs: int) -> torch.Tensor | None:
    """``weights`` as a float tensor of mean 1, or None; raises on a bad shape or value."""
    if weights is None:
        return None
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64)).float().reshape(-1)
    if w.numel() != n_pairs:
        raise ValueError(f"pair_weights has {w.numel()} entries for {n_pairs} pairs")
    if not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
        raise ValueError("pair_weights must be finite, >= 0 and not all 0")
    return w / w.mean()


@dataclass
class _Pairs:
    chosen: torch.Tensor
    rejected: torch.Tensor
    weight: torch.Tensor | None = None  # per pair, mean 1 over all pairs; None = equal

    def subset(self, pos: np.ndarray) -> _Pairs:
        p = torch.from_numpy(pos).long()
        weight = None if self.weight is None else self.weight[p]
        return _Pairs(self.chosen[p], self.rejected[p], weight)

    def __len__(self) -> int:
        return int(self.chosen.numel())

    def diff(self, feats: LatentRows, w: torch.Tensor) -> torch.Tensor:
        if 2 * len(self) >= feats.n_rows:  # cheaper to score every response once
            r = feats.rewards(w)
            return r[self.chosen] - r[self.rejected]
        return feats.rewards(w, self.chosen) - feats.rewards(w, self.rejected)


def _group_ids(groups: object | None, pairs: _Pairs) -> np.ndarray:
    if groups is None:
        return pair_groups(pairs.chosen, pairs.rejected)
    gid = np.asarray(groups)
    if gid.shape != (len(pairs),):
        raise ValueError(f"groups must have one id per pair ({len(pairs)}), got shape {gid.shape}")
    return gid
