"""Cached latent matrices as training input: dense, torch/scipy sparse, top-k or ragged rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sarm.latents import PooledLatents, SparseLatents


@dataclass(frozen=True)
class LatentRows:
    """Cached per-response features: dense ``[n, m]`` or padded sparse ``(indices, values) [n, p]``.

    Padded entries have value 0 (and index 0), so a gather-and-sum gives ``w . z``.
    """

    n_features: int
    dense: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def n_rows(self) -> int:
        src = self.dense if self.dense is not None else self.values
        assert src is not None
        return int(src.shape[0])

    def rewards(self, w: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``w . z`` for the given rows (all rows when ``rows`` is None)."""
        if self.dense is not None:
            x = self.dense if rows is None else self.dense[rows]
            return x @ w
        assert self.indices is not None and self.values is not None
        idx = self.indices if rows is None else self.indices[rows]
        val = self.values if rows is None else self.values[rows]
        return (val * w[idx]).sum(-1)


def as_latent_rows(x: object, n_features: int | None = None, where: str = "latents") -> LatentRows:
    """Cached latents as :class:`LatentRows`, from any of these:

    - a dense ``[n, m]`` torch tensor or numpy array;
    - a torch sparse (COO/CSR) or scipy sparse matrix;
    - an ``(indices, values)`` pair of ``[n, k]`` arrays, or of per-row lists of
      arrays (ragged), with ``n_features=m``;
    - :class:`sarm.latents.SparseLatents`, or the :class:`sarm.latents.PooledLatents`
      a SARM returns.
    """
    if isinstance(x, PooledLatents):
        x = x.latents
    if isinstance(x, SparseLatents):
        indptr, cols, data = (torch.from_numpy(a.copy()) for a in (x.indptr, x.indices, x.values))
        return _from_csr(indptr, cols, data, (x.n, x.d_sae), where)
    if isinstance(x, tuple):
        return _from_topk(x, n_features, where)
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        return _from_torch_sparse(x, where)
    if hasattr(x, "tocsr"):  # scipy.sparse matrix or array
        csr = x.tocsr()
        as_t = torch.from_numpy
        return _from_csr(as_t(csr.indptr), as_t(csr.indices), as_t(csr.data), csr.shape, where)
    dense = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))
    if dense.dim() != 2:
        raise ValueError(
            f"{where}: expected a 2-D [responses, features] matrix, got shape {tuple(dense.shape)}"
        )
    dense = dense.detach().to("cpu", torch.float32)
    _check_finite(dense, where)
    return LatentRows(n_features=int(dense.shape[1]), dense=dense)


def _from_torch_sparse(x: torch.Tensor, where: str) -> LatentRows:
    if x.dim() != 2:
        raise ValueError(f"{where}: expected a 2-D sparse matrix, got shape {tuple(x.shape)}")
    if x.layout == torch.sparse_csr:
        return _from_csr(x.crow_indices(), x.col_indices(), x.values(), tuple(x.shape), where)
    coo = x.to_sparse_coo().coalesce()
    rows, cols = coo.indices()
    counts = torch.bincount(rows, minlength=x.shape[0])
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    return _from_csr(indptr, cols, coo.values(), tuple(x.shape), where)


def _check_finite(t: torch.Tensor, where: str) -> None:
    bad = ~torch.isfinite(t)
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise ValueError(f"{where}: row {row} has NaN or inf values")


def _from_topk(pair: tuple, n_features: int | None, where: str) -> LatentRows:
    if len(pair) != 2 or n_features is None:
        raise ValueError(f"{where}: a sparse (indices, values) pair needs n_features")
    if isinstance(pair[0], list):
        return _from_ragged(pair[0], pair[1], n_features, where)
    idx = torch.from_numpy(np.array(pair[0], dtype=np.int64))
    val = torch.from_numpy(np.array(pair[1], dtype=np.float32))
    if idx.shape != val.shape or idx.dim() != 2:
        raise ValueError(
            f"{where}: indices {tuple(idx.shape)} and values {tuple(val.shape)} must both be [n, k]"
        )
    _check_range(idx, n_features, where)
    _check_finite(val, where)
    return LatentRows(n_features=int(n_features), indices=idx, values=val)


def _check_range(idx: torch.Tensor, n_features: int, where: str) -> None:
    if idx.numel() and not (int(idx.min()) >= 0 and int(idx.max()) < n_features):
        raise ValueError(f"{where}: feature indices must lie in 0..{n_features - 1}")


def _from_ragged(indices: list, values: list, n_features: int, where: str) -> LatentRows:
    """Per-response ``indices[i]`` / ``values[i]`` arrays of any length (``PooledLatents``)."""
    if len(indices) != len(values):
        raise ValueError(f"{where}: {len(indices)} index arrays but {len(values)} value arrays")
    lengths = [len(a) for a in indices]
    for i, (n_idx, vals) in enumerate(zip(lengths, values, strict=True)):
        if n_idx != len(vals):
            raise ValueError(f"{where}: row {i} has {n_idx} indices but {len(vals)} values")
    indptr = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))
    cols = torch.as_tensor(np.concatenate([np.asarray(a).ravel() for a in indices] or [[]]))
    data = torch.as_tensor(np.concatenate([np.asarray(v).ravel() for v in values] or [[]]))
    _check_range(cols, n_features, where)
    return _from_csr(indptr, cols, data, (len(indices), n_features), where)


def _from_csr(indptr, cols, data, shape, where: str) -> LatentRows:
    """Pad CSR rows to the longest row so every row is one ``[p]`` slice."""
    counts = (indptr[1:] - indptr[:-1]).long()
    n, width = int(shape[0]), max(int(counts.max()) if counts.numel() else 0, 1)
    row_of = torch.repeat_interleave(torch.arange(n), counts)
    slot = torch.arange(cols.numel()) - indptr[:-1].long()[row_of]
    idx = torch.zeros(n, width, dtype=torch.long)
    val = torch.zeros(n, width, dtype=torch.float32)
    idx[row_of, slot] = cols.long()
    val[row_of, slot] = data.float()
    _check_finite(val, where)
    return LatentRows(n_features=int(shape[1]), indices=idx, values=val)
