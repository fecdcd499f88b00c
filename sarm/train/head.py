"""Bradley-Terry training of the linear reward head on cached pooled latents.

The backbone and SAE are frozen, so every response's pooled latents ``z_T`` are
computed once and cached; training only ever touches that matrix. The head is
``r = w . z`` and the loss over pairs is ``-log sigmoid(r_chosen - r_rejected)``
(plus optional ``l1 * ||w||_1`` and ``weight_decay / 2 * ||w||^2``), minimised
from ``w = 0`` (the problem is convex, so no random start is needed) by full-batch
FISTA (default: no learning rate to tune, exact zeros under L1) or by Adam.
Pairs are split into train and validation by connected groups (pairs sharing a
response stay together) and training stops early when the validation loss stops
improving; the best epoch's weights are returned.

The same routine trains the paper's dense baseline: a linear head on the
standardised hidden state ``u_T`` at the same layer and pooled token.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sarm.head import LinearHead

logger = logging.getLogger(__name__)

HeadLRSchedule = Literal["constant", "cosine"]
HeadOptimizer = Literal["fista", "adam"]


@dataclass
class HeadTrainConfig:
    """Optimiser, regularisation, validation split and early stopping for BT training.

    ``optimizer="fista"`` (default) takes one full-batch proximal-gradient step per
    epoch with step ``step_scale / L`` (``L`` estimated from the data, so features of
    any scale work); ``"adam"`` uses ``lr``, ``lr_schedule`` and ``batch_size``
    (``None`` = full batch). One epoch over 100k cached pairs is a single sparse
    gather, so full batch is the norm. ``bias=True``
    does not learn a bias (it cancels in Bradley-Terry) but centres the rewards
    of the training responses at 0.
    """

    optimizer: HeadOptimizer = "fista"
    step_scale: float = 1.0
    lr: float = 1e-2
    max_epochs: int = 1000
    patience: int = 25
    min_delta: float = 1e-4
    l1: float = 0.0
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    batch_size: int | None = None
    lr_schedule: HeadLRSchedule = "cosine"
    bias: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("fista", "adam"):
            raise ValueError(
                f"HeadTrainConfig.optimizer must be 'fista' or 'adam', got {self.optimizer!r}"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"HeadTrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        for name in ("lr", "step_scale", "max_epochs", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HeadTrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("l1", "weight_decay", "min_delta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"HeadTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(
                f"HeadTrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(
                f"HeadTrainConfig.batch_size must be >= 1 or None, got {self.batch_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadTrainConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"HeadTrainConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclass
class HeadTrainResult:
    """The trained head (``weight [m]``, ``bias``), per-epoch history and the best epoch."""

    weight: torch.Tensor
    bias: float
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    n_train_pairs: int
    n_val_pairs: int
    config: HeadTrainConfig = field(default_factory=HeadTrainConfig)

    def to_head(self) -> LinearHead:
        return LinearHead(self.weight, self.bias)

    def summary(self) -> dict[str, Any]:
        """Best-epoch figures, for printing and for ``head_train.json``."""
        best = self.history[self.best_epoch - 1] if self.history else {}
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "n_train_pairs": self.n_train_pairs,
            "n_val_pairs": self.n_val_pairs,
            "nonzero_weights": int((self.weight != 0).sum()),
            **{k: v for k, v in best.items() if k != "epoch"},
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``head.safetensors`` (``score.weight [1, m]``) and ``head_train.json``."""
        path = self.to_head().save(Path(directory) / "head.safetensors")
        self.save_history(directory)
        return path

    def save_history(self, directory: str | Path) -> Path:
        """Write ``head_train.json``: summary, config and per-epoch history."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "summary": self.summary(),
            "config": self.config.to_dict(),
            "history": self.history,
        }
        tmp = directory / "head_train.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2))
        return tmp.replace(directory / "head_train.json")


# --------------------------------------------------------------------------- features


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
    - a :class:`sarm.model.PooledLatents` (its ``indices``/``values`` lists).
    """
    if isinstance(x, tuple):
        return _from_topk(x, n_features, where)
    if isinstance(getattr(x, "indices", None), list):  # sarm.model.PooledLatents
        return _from_topk((x.indices, x.values), n_features, where)
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


# --------------------------------------------------------------------------- pairs


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


# --------------------------------------------------------------------------- training


def bt_loss(diff: torch.Tensor) -> torch.Tensor:
    """Mean Bradley-Terry loss ``-log sigmoid(r_c - r_r)``."""
    return -F.logsigmoid(diff).mean()


def pair_accuracy(diff: torch.Tensor) -> float:
    """Share of pairs ranked right, strictly (a tie is wrong, as in :mod:`sarm.evaluate`)."""
    return float((diff > 0).float().mean())


@dataclass
class _Pairs:
    chosen: torch.Tensor
    rejected: torch.Tensor

    def subset(self, pos: np.ndarray) -> _Pairs:
        p = torch.from_numpy(pos).long()
        return _Pairs(self.chosen[p], self.rejected[p])

    def __len__(self) -> int:
        return int(self.chosen.numel())

    def diff(self, feats: LatentRows, w: torch.Tensor) -> torch.Tensor:
        if 2 * len(self) >= feats.n_rows:  # cheaper to score every response once
            r = feats.rewards(w)
            return r[self.chosen] - r[self.rejected]
        return feats.rewards(w, self.chosen) - feats.rewards(w, self.rejected)


def _penalty(w: torch.Tensor, cfg: HeadTrainConfig) -> torch.Tensor | float:
    """``l1 * ||w||_1 + weight_decay / 2 * ||w||^2``."""
    out: torch.Tensor | float = 0.0
    if cfg.l1:
        out = out + cfg.l1 * w.abs().sum()
    if cfg.weight_decay:
        out = out + 0.5 * cfg.weight_decay * w.pow(2).sum()
    return out


def _objective(diff: torch.Tensor, w: torch.Tensor, cfg: HeadTrainConfig) -> torch.Tensor:
    return bt_loss(diff) + _penalty(w, cfg)


class _Adam:
    """Adam on the full objective (L1 as a subgradient), full- or mini-batch."""

    def __init__(self, feats: LatentRows, train: _Pairs, cfg: HeadTrainConfig):
        self.feats, self.train, self.cfg = feats, train, cfg
        self.w = torch.zeros(feats.n_features, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=cfg.lr)
        self.sched = _schedule(self.opt, cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def epoch(self) -> None:
        for batch in self._batches():
            self.opt.zero_grad(set_to_none=True)
            _objective(batch.diff(self.feats, self.w), self.w, self.cfg).backward()
            self.opt.step()
        self.sched.step()

    def _batches(self) -> list[_Pairs]:
        n, size = len(self.train), self.cfg.batch_size
        if size is None or size >= n:
            return [self.train]
        return [
            self.train.subset(p.numpy()) for p in torch.randperm(n, generator=self.gen).split(size)
        ]


class _Fista:
    """Accelerated proximal gradient (FISTA with adaptive restart), full batch.

    The step is ``step_scale / L`` with ``L`` a bound on the curvature of the mean BT
    loss (``||D||^2 / 4n`` for the pair-difference matrix ``D``, by power iteration),
    so no learning rate needs tuning, and L1 is an exact soft-threshold: unused
    features end at exactly 0.
    """

    def __init__(self, feats: LatentRows, train: _Pairs, cfg: HeadTrainConfig):
        self.feats, self.train, self.cfg = feats, train, cfg
        lipschitz = 0.25 * _top_eigenvalue(feats, train, cfg.seed) / len(train) + cfg.weight_decay
        self.step = cfg.step_scale / max(lipschitz, 1e-12)
        self.w = torch.zeros(feats.n_features)
        self.prev = self.w.clone()
        self.t = 1.0

    def epoch(self) -> None:
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * self.t**2)) / 2.0
        y = self.w + ((self.t - 1.0) / t_next) * (self.w - self.prev)
        new = _soft_threshold(y - self.step * self._grad(y), self.step * self.cfg.l1)
        restart = float(torch.dot(y - new, new - self.w)) > 0.0
        self.prev, self.w, self.t = self.w, new, 1.0 if restart else t_next

    def _grad(self, y: torch.Tensor) -> torch.Tensor:
        y = y.detach().requires_grad_(True)
        loss = bt_loss(self.train.diff(self.feats, y))
        if self.cfg.weight_decay:
            loss = loss + 0.5 * self.cfg.weight_decay * y.pow(2).sum()
        (grad,) = torch.autograd.grad(loss, y)
        return grad


def _soft_threshold(x: torch.Tensor, tau: float) -> torch.Tensor:
    return x.sign() * (x.abs() - tau).clamp_min(0.0) if tau else x


def _top_eigenvalue(feats: LatentRows, pairs: _Pairs, seed: int, iters: int = 30) -> float:
    """Largest eigenvalue of ``D^T D`` (``D v`` = pair reward differences), over-estimated by 10%."""
    v = torch.randn(feats.n_features, generator=torch.Generator().manual_seed(seed))
    v = v / v.norm()
    norm = 0.0
    for _ in range(iters):
        x = v.detach().requires_grad_(True)
        dv = pairs.diff(feats, x)
        (v,) = torch.autograd.grad(dv, x, grad_outputs=dv.detach())
        norm = float(v.norm())
        if norm == 0.0:
            raise ValueError(
                "every pair has identical chosen and rejected latents; nothing to learn"
            )
        v = v / norm
    return 1.1 * norm


@torch.no_grad()
def _evaluate(feats: LatentRows, pairs: _Pairs, w: torch.Tensor, prefix: str) -> dict[str, float]:
    if not len(pairs):
        return {}
    diff = pairs.diff(feats, w)
    return {f"{prefix}_loss": float(bt_loss(diff)), f"{prefix}_accuracy": pair_accuracy(diff)}


def _schedule(opt: torch.optim.Optimizer, cfg: HeadTrainConfig):
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=cfg.max_epochs, eta_min=cfg.lr * 0.01
    )


@dataclass
class _EarlyStop:
    patience: int
    min_delta: float
    best: float = math.inf
    best_epoch: int = 0
    best_w: torch.Tensor | None = None
    waited: int = 0

    def update(self, epoch: int, score: float, w: torch.Tensor) -> bool:
        """Record ``score`` (lower is better); True when patience has run out."""
        if score < self.best - self.min_delta or self.best_w is None:
            self.best, self.best_epoch, self.best_w, self.waited = (
                score,
                epoch,
                w.detach().clone(),
                0,
            )
            return False
        self.waited += 1
        return self.waited >= self.patience


def train_bt_head(
    latents: object,
    chosen_row: object,
    rejected_row: object,
    cfg: HeadTrainConfig | None = None,
    n_features: int | None = None,
    groups: object | None = None,
    progress: bool = False,
) -> HeadTrainResult:
    """Train ``w`` (and optionally a centring bias) by Bradley-Terry on cached latents.

    ``latents``: one row per response, dense ``[n, m]`` (torch or numpy), torch or
    scipy sparse, or an ``(indices, values)`` pair of ``[n, k]`` arrays with
    ``n_features=m``. ``chosen_row[i]`` / ``rejected_row[i]`` index the rows of
    pair ``i``. ``groups`` (one id per pair) overrides the automatic grouping used
    for the validation split. The loss is computed in float32 on CPU.
    """
    cfg = cfg or HeadTrainConfig()
    feats = as_latent_rows(latents, n_features)
    pairs = _Pairs(*check_pairs(chosen_row, rejected_row, feats.n_rows))
    gid = _group_ids(groups, pairs)
    train_pos, val_pos = split_pairs(gid, cfg.val_fraction, cfg.seed)
    train, val = pairs.subset(train_pos), pairs.subset(val_pos)
    w, history, stop = _fit(feats, train, val, cfg, progress)
    bias = -float(feats.rewards(w).mean()) if cfg.bias else 0.0
    return HeadTrainResult(
        weight=w, bias=bias, history=history, best_epoch=stop.best_epoch,
        stopped_early=len(history) < cfg.max_epochs, n_train_pairs=len(train),
        n_val_pairs=len(val), config=cfg,
    )  # fmt: skip


def _group_ids(groups: object | None, pairs: _Pairs) -> np.ndarray:
    if groups is None:
        return pair_groups(pairs.chosen, pairs.rejected)
    gid = np.asarray(groups)
    if gid.shape != (len(pairs),):
        raise ValueError(f"groups must have one id per pair ({len(pairs)}), got shape {gid.shape}")
    return gid


def _fit(feats: LatentRows, train: _Pairs, val: _Pairs, cfg: HeadTrainConfig, progress: bool):
    opt = _Fista(feats, train, cfg) if cfg.optimizer == "fista" else _Adam(feats, train, cfg)
    stop = _EarlyStop(cfg.patience, cfg.min_delta)
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(1, cfg.max_epochs + 1), desc="BT head", disable=not progress):
        opt.epoch()
        w = opt.w.detach()
        row = {
            "epoch": float(epoch),
            **_evaluate(feats, train, w, "train"),
            **_evaluate(feats, val, w, "val"),
        }
        history.append(row)
        score = row["val_loss"] if len(val) else float(row["train_loss"] + _penalty(w, cfg))
        if stop.update(epoch, score, w) and len(val):
            break
    assert stop.best_w is not None
    return stop.best_w, history, stop


def train_dense_baseline(
    hidden: object,
    chosen_row: object,
    rejected_row: object,
    cfg: HeadTrainConfig | None = None,
    groups: object | None = None,
    progress: bool = False,
) -> HeadTrainResult:
    """The paper's dense baseline: BT on the standardised hidden state ``u_T [n, d]``.

    Same pairs, split and optimiser as :func:`train_bt_head`; its score is ``w . u_T``.
    """
    if (
        isinstance(hidden, tuple)
        or hasattr(hidden, "tocsr")
        or (isinstance(hidden, torch.Tensor) and hidden.layout != torch.strided)
    ):
        raise ValueError("the dense baseline takes a dense [responses, d] hidden-state matrix")
    return train_bt_head(hidden, chosen_row, rejected_row, cfg, groups=groups, progress=progress)
