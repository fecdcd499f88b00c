"""SAE quality on held-out activations, measured through the exact SARM encode path.

Latents come from :func:`sarm.saes.sarm_encode` (TopK values kept as they are, no
ReLU) and reconstructions from :func:`sarm.saes.sarm_decode` (``W_dec z + b_pre``).
Sums are accumulated in float64 batch by batch, so any eval set size fits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sae_lens.saes.sae import SAE

from sarm.saes import sarm_decode, sarm_encode

_GATHER_BUDGET = 1 << 24  # floats in the [rows, k, d] gather of one decode batch


@dataclass
class ReconstructionStats:
    """Running sums for normalised MSE, explained variance, L0 and dead latents."""

    d_in: int
    d_sae: int
    n: int = 0
    sq_err: float = 0.0
    sq_u: float = 0.0
    sq_res: float = 0.0
    l0: float = 0.0
    negative: float = 0.0
    kept: float = 0.0
    sum_u: torch.Tensor = field(init=False)
    sum_res: torch.Tensor = field(init=False)
    fired: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.sum_u = torch.zeros(self.d_in, dtype=torch.float64)
        self.sum_res = torch.zeros(self.d_in, dtype=torch.float64)
        self.fired = torch.zeros(self.d_sae, dtype=torch.bool)

    def update(
        self, u: torch.Tensor, u_hat: torch.Tensor, values: torch.Tensor, indices: torch.Tensor
    ) -> None:
        u, res = u.double(), (u - u_hat).double()
        self.n += u.shape[0]
        self.sq_err += float(res.pow(2).sum())
        self.sq_u += float(u.pow(2).sum())
        self.sum_u += u.sum(0)
        self.sum_res += res.sum(0)
        active = values != 0
        self.l0 += float(active.sum())
        self.negative += float((values < 0).sum())
        self.kept += values.numel()
        self.fired[indices[active]] = True

    def result(self) -> dict[str, float]:
        """The metrics as plain floats (see :func:`sae_metrics`)."""
        if self.n == 0:
            raise ValueError("no evaluation activations were seen")
        total = self.sq_u - float(self.sum_u.pow(2).sum()) / self.n
        if not total > 0:
            raise ValueError(
                f"the {self.n} evaluation activation(s) have no variance, so explained variance "
                "is undefined; evaluate on at least two distinct rows"
            )
        res_var = self.sq_err - float(self.sum_res.pow(2).sum()) / self.n
        return {
            "normalized_mse": self.sq_err / total,
            "explained_variance": 1.0 - res_var / total,
            "mean_l0": self.l0 / self.n,
            "dead_fraction": 1.0 - float(self.fired.float().mean()),
            "negative_kept_fraction": self.negative / max(self.kept, 1.0),
            "n_eval": float(self.n),
        }


@torch.no_grad()
def sae_metrics(
    sae: SAE, u: torch.Tensor, k: int, batch_size: int | None = None
) -> dict[str, float]:
    """Quality of ``sae`` on standardised activations ``u [n, d]``.

    - ``normalized_mse``: ``sum ||u - u_hat||^2 / sum ||u - mean(u)||^2``;
    - ``explained_variance``: ``1 - sum ||e - mean(e)||^2 / sum ||u - mean(u)||^2``
      with ``e = u - u_hat`` (a constant offset in the error does not count against it);
    - ``mean_l0``: non-zero latents per row (``k`` unless kept values are exactly 0);
    - ``dead_fraction``: share of latents never active on any row of ``u``;
    - ``negative_kept_fraction``: share of kept TopK values below 0 (those sae-lens's
      ReLU would zero but SARM keeps).
    """
    if u.dim() != 2 or u.shape[0] == 0:
        raise ValueError(
            f"evaluation activations must be a non-empty [n, d] matrix, got {tuple(u.shape)}"
        )
    stats = ReconstructionStats(d_in=u.shape[1], d_sae=int(sae.cfg.d_sae))
    batch_size = batch_size or max(1, _GATHER_BUDGET // (k * u.shape[1]))
    for chunk in u.split(batch_size):
        chunk = chunk.to(sae.W_enc.device, torch.float32)
        values, indices = sarm_encode(sae, chunk, k)
        stats.update(
            chunk.cpu(), sarm_decode(sae, values, indices).cpu(), values.cpu(), indices.cpu()
        )
    return stats.result()
