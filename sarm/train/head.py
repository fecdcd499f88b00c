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

Input handling lives in :mod:`sarm.train.latents` (the latent matrix) and
:mod:`sarm.train.pairs` (pair checks, groups and the split); their public names
are importable from here too.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sarm.configs import HeadTrainConfig
from sarm.constants import HEAD_TRAIN_FILE, HEAD_WEIGHTS_FILE
from sarm.head import Head
from sarm.residual import ErrorReadout, split_error_weights
from sarm.train.latents import LatentRows, as_latent_rows
from sarm.train.pairs import _group_ids, _Pairs, check_pair_weights, check_pairs, split_pairs
from sarm.train.pairs import pair_groups as pair_groups

logger = logging.getLogger(__name__)


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

    def to_head(self) -> Head:
        return Head(self.weight, self.bias)

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
        path = self.to_head().save(Path(directory) / HEAD_WEIGHTS_FILE)
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
        tmp = directory / (HEAD_TRAIN_FILE + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        return tmp.replace(directory / HEAD_TRAIN_FILE)


# --------------------------------------------------------------------------- training


def bt_loss(diff: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Bradley-Terry loss ``-log sigmoid(r_c - r_r)``, weighted per pair if given."""
    losses = -F.logsigmoid(diff)
    return losses.mean() if weight is None else (losses * weight).sum() / weight.sum()


def pair_accuracy(diff: torch.Tensor) -> float:
    """Share of pairs ranked right, strictly (a tie is wrong, as in :mod:`sarm.evaluate`)."""
    return float((diff > 0).float().mean())


def _penalty(w: torch.Tensor, cfg: HeadTrainConfig) -> torch.Tensor | float:
    """``l1 * ||w||_1 + weight_decay / 2 * ||w||^2``."""
    out: torch.Tensor | float = 0.0
    if cfg.l1:
        out = out + cfg.l1 * w.abs().sum()
    if cfg.weight_decay:
        out = out + 0.5 * cfg.weight_decay * w.pow(2).sum()
    return out


def _objective(
    diff: torch.Tensor, w: torch.Tensor, cfg: HeadTrainConfig, weight: torch.Tensor | None = None
) -> torch.Tensor:
    return bt_loss(diff, weight) + _penalty(w, cfg)


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
            _objective(batch.diff(self.feats, self.w), self.w, self.cfg, batch.weight).backward()
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
        # weighted loss: curvature at most max(weight) / mean(weight) times the plain one
        scale = 1.0 if train.weight is None else float(train.weight.max() / train.weight.mean())
        curvature = 0.25 * scale * _top_eigenvalue(feats, train, cfg.seed) / len(train)
        lipschitz = curvature + cfg.weight_decay
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
        loss = bt_loss(self.train.diff(self.feats, y), self.train.weight)
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
    return {
        f"{prefix}_loss": float(bt_loss(diff, pairs.weight)),
        f"{prefix}_accuracy": pair_accuracy(diff),
    }


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
    pair_weights: object | None = None,
) -> HeadTrainResult:
    """Train ``w`` (and optionally a centring bias) by Bradley-Terry on cached latents.

    ``latents``: one row per response, dense ``[n, m]`` (torch or numpy), torch or
    scipy sparse, or an ``(indices, values)`` pair of ``[n, k]`` arrays with
    ``n_features=m``. ``chosen_row[i]`` / ``rejected_row[i]`` index the rows of
    pair ``i``. ``groups`` (one id per pair) overrides the automatic grouping used
    for the validation split. ``pair_weights`` (one per pair, e.g. from
    :func:`~sarm.train.pairs.balanced_pair_weights`) weighs each pair's loss, on
    the validation side too. The loss is computed in float32 on CPU.
    """
    cfg = cfg or HeadTrainConfig()
    feats = as_latent_rows(latents, n_features)
    chosen, rejected = check_pairs(chosen_row, rejected_row, feats.n_rows)
    pairs = _Pairs(chosen, rejected, check_pair_weights(pair_weights, chosen.numel()))
    gid = _group_ids(groups, pairs)
    train_pos, val_pos = split_pairs(gid, cfg.val_fraction, cfg.seed)
    train, val = pairs.subset(train_pos), pairs.subset(val_pos)
    w, history, stop = _fit(feats, train, val, cfg, progress)
    bias = -float(feats.rewards(w).mean()) if cfg.bias else 0.0
    return HeadTrainResult(
        weight=w,
        bias=bias,
        history=history,
        best_epoch=stop.best_epoch,
        stopped_early=len(history) < cfg.max_epochs,
        n_train_pairs=len(train),
        n_val_pairs=len(val),
        config=cfg,
    )


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
    pair_weights: object | None = None,
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
    return train_bt_head(
        hidden,
        chosen_row,
        rejected_row,
        cfg,
        groups=groups,
        progress=progress,
        pair_weights=pair_weights,
    )


def train_error_head(
    values: object,
    indices: object,
    errors: object,
    chosen_row: object,
    rejected_row: object,
    cfg: HeadTrainConfig | None = None,
    n_latents: int | None = None,
    groups: object | None = None,
    pair_weights: object | None = None,
    progress: bool = False,
) -> tuple[Head, ErrorReadout, HeadTrainResult]:
    """Bradley-Terry over the SAE latents and the SAE error at once: ``r = w.z + w_err.e``.

    ``values``/``indices`` are the TopK latents ``[n, k]`` and ``errors`` the
    reconstruction errors ``u_T - u_hat_T [n, d]`` of the same rows. Returns the
    head over ``n_latents + 1`` columns (the last one the SAE error) and the
    :class:`~sarm.residual.ErrorReadout` a SARM needs to compute that column.
    """
    vals = torch.as_tensor(values, dtype=torch.float32)
    idx = torch.as_tensor(indices, dtype=torch.int64)
    err = torch.as_tensor(errors, dtype=torch.float32)
    if vals.shape != idx.shape or vals.dim() != 2 or err.dim() != 2 or len(err) != len(vals):
        raise ValueError(
            f"latents {tuple(vals.shape)}/{tuple(idx.shape)} and errors {tuple(err.shape)} "
            "must be [n, k] and [n, d] over the same rows"
        )
    m = int(n_latents) if n_latents is not None else int(idx.max()) + 1
    err_idx = (m + torch.arange(err.shape[1])).expand(len(err), -1)
    result = train_bt_head(
        (torch.cat([idx, err_idx], 1), torch.cat([vals, err], 1)),
        chosen_row,
        rejected_row,
        cfg,
        n_features=m + err.shape[1],
        groups=groups,
        progress=progress,
        pair_weights=pair_weights,
    )
    head, readout = split_error_weights(result.weight.numpy(), m, result.bias)
    return head, readout, result
