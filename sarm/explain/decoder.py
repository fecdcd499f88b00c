"""Decoder-direction views of features: the logit lens and the nearest features.

The logit lens reads a feature's SAE decoder vector ``d_i`` as if it were a final
hidden state: ``logits = W_U (g * d_i / rms(d_i))`` with ``g`` the backbone's final
RMSNorm gain and ``W_U`` its unembedding (the input embedding when the checkpoint
ties them). A backbone cut from a checkpoint that keeps only its first layers (the
released Llama-SARM-4B layout) has neither; :func:`unembedding` then says why and
no lens is computed, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Unembedding:
    """The final norm gain ``g`` ``[d]`` and the unembedding ``W_U`` ``[vocab, d]``."""

    norm: torch.Tensor
    weight: torch.Tensor
    eps: float


def unembedding(backbone) -> tuple[Unembedding | None, str]:
    """The backbone's final norm and unembedding, or None and the reason there is none."""
    model = backbone.model
    norm = getattr(model, "sarm_final_norm", None)
    config = model.config
    embed = getattr(model, "embed_tokens", None)
    if not getattr(config, "tie_word_embeddings", False) or embed is None:
        return None, "no unembedding: the checkpoint keeps only the first layers (no lm_head)"
    if norm is None:
        return None, "no unembedding: the checkpoint has no final norm"
    eps = float(getattr(config, "rms_norm_eps", 1e-6))
    return Unembedding(norm.float().cpu(), embed.weight.detach().float().cpu(), eps), ""


def logit_lens(
    decoder: torch.Tensor, lens: Unembedding, top: int = 10, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top promoted and suppressed token ids (and logits) of every decoder row ``[m, d]``.

    Returns ``(promoted_ids, promoted_logits, suppressed_ids, suppressed_logits)``,
    each ``[m, top]``, most extreme first.
    """
    out = [[], [], [], []]
    for lo in range(0, decoder.shape[0], chunk):
        d = decoder[lo : lo + chunk].float().cpu()
        normed = d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + lens.eps) * lens.norm
        logits = normed @ lens.weight.T
        hi_v, hi_i = logits.topk(top, dim=-1)
        lo_v, lo_i = (-logits).topk(top, dim=-1)
        for store, part in zip(out, (hi_i, hi_v, lo_i, -lo_v), strict=True):
            store.append(part.numpy())
    return tuple(np.concatenate(p) for p in out)  # type: ignore[return-value]


def nearest_features(
    decoder: torch.Tensor, top: int = 10, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For every decoder row, the ``top`` other rows of highest cosine: ``(ids, cosines)``."""
    unit = torch.nn.functional.normalize(decoder.float().cpu(), dim=-1)
    ids, cos = [], []
    for lo in range(0, unit.shape[0], chunk):
        sims = unit[lo : lo + chunk] @ unit.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + lo] = -2.0  # never a feature's own neighbour
        v, i = sims.topk(min(top, unit.shape[0] - 1), dim=-1)
        ids.append(i.numpy())
        cos.append(v.numpy())
    return np.concatenate(ids), np.concatenate(cos)
