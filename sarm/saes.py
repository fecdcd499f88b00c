"""The SAE: a sae-lens ``TopKSAE`` object plus the exact SARM encode path.

sae-lens owns the weights, the config and save/load. Scoring does not call
``sae.encode`` because two details of the released SARM differ from sae-lens:
the kept TopK values are used as they are (no ReLU), and the input is the
per-token standardisation with eps 1e-6 (sae-lens's ``layer_norm`` uses 1e-5).

Parameter names, released SARM -> sae-lens:
``sae.encoder.weight [m, d]`` -> ``W_enc [d, m]`` (transposed),
``sae.latent_bias [m]`` -> ``b_enc``, ``sae.pre_bias [d]`` -> ``b_dec``,
``sae.decoder.weight [d, m]`` -> ``W_dec [m, d]`` (transposed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float, Int
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAE
from safetensors import SafetensorError

from sarm.constants import SAE_META_FILE
from sarm.errors import CheckpointError, brief, unreadable

SARM_EPS = 1e-6

RELEASED_KEYS = ("pre_bias", "latent_bias", "encoder.weight", "decoder.weight")
SAE_WEIGHTS_FILE = "sae_weights.safetensors"  # what sae-lens's save_model writes
# What sae-lens raises for a config and weights that do not fit together.
SAE_LOAD_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, OSError)


@dataclass
class SAEMeta:
    """What the scoring path needs beyond sae-lens's own config."""

    k: int
    use_activation: bool = True
    eps: float = SARM_EPS
    mode: Literal["tokens", "last"] = "last"
    backbone: str | None = None
    layer: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"SAE k must be >= 1, got {self.k}")
        if self.mode not in ("tokens", "last"):
            raise ValueError(f"SAE mode must be 'tokens' or 'last', got {self.mode!r}")
        if not self.eps > 0:
            raise ValueError(f"standardisation eps must be > 0, got {self.eps}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["standardisation"] = {"kind": "sarm", "eps": self.eps, "bessel": True}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SAEMeta:
        eps = data.get("eps", data.get("standardisation", {}).get("eps", SARM_EPS))
        return cls(
            k=int(data["k"]),
            use_activation=bool(data.get("use_activation", True)),
            eps=float(eps),
            mode=data.get("mode", "last"),
            backbone=data.get("backbone"),
            layer=data.get("layer"),
        )


def standardize(
    h: Float[torch.Tensor, "... d"], eps: float = SARM_EPS
) -> Float[torch.Tensor, "... d"]:
    """Per-token ``(h - mean) / (std + eps)`` over the last dim, Bessel-corrected std."""
    h = h.float()
    mean = h.mean(dim=-1, keepdim=True)
    std = h.std(dim=-1, keepdim=True)
    return (h - mean) / (std + eps)


def make_topk_sae(d_in: int, d_sae: int, k: int, device: str = "cpu") -> TopKSAE:
    """A freshly initialised sae-lens TopK SAE configured for SARM inputs."""
    cfg = TopKSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        dtype="float32",
        device=str(device),
        apply_b_dec_to_input=True,
        normalize_activations="none",
    )
    return TopKSAE(cfg)


def preactivations(sae: SAE, u: Float[torch.Tensor, "... d"]) -> Float[torch.Tensor, "... m"]:
    """``a = W_enc^T (u - b_pre) + b_lat`` for standardised inputs ``u``."""
    w_enc = sae.W_enc
    return (u.to(w_enc.dtype) - sae.b_dec) @ w_enc + sae.b_enc


def sarm_encode(
    sae: SAE, u: Float[torch.Tensor, "... d"], k: int, use_activation: bool = True
) -> tuple[Float[torch.Tensor, "... k"], Int[torch.Tensor, "... k"]]:
    """Sparse latents as ``(values, indices)``, kept values unchanged.

    With ``use_activation=False`` every latent is kept (``k`` is ignored) and the
    indices are ``0..m-1``.
    """
    a = preactivations(sae, u)
    if not use_activation:
        idx = torch.arange(a.shape[-1], device=a.device).expand_as(a)
        return a, idx
    values, indices = torch.topk(a, k=k, dim=-1, sorted=True)
    return values, indices


def sarm_decode(
    sae: SAE, values: Float[torch.Tensor, "... k"], indices: Int[torch.Tensor, "... k"]
) -> Float[torch.Tensor, "... d"]:
    """Reconstruction ``u_hat = W_dec z + b_pre`` from sparse latents."""
    rows: Float[torch.Tensor, "... k d"] = sae.W_dec[indices]
    return (values.unsqueeze(-1) * rows).sum(dim=-2) + sae.b_dec


def sae_from_released(tensors: dict[str, torch.Tensor], k: int, device: str = "cpu") -> TopKSAE:
    """Build a sae-lens TopK SAE from released ``sae.*`` tensors (prefix optional)."""
    t = {key.removeprefix("sae."): v for key, v in tensors.items()}
    missing = [key for key in RELEASED_KEYS if key not in t]
    if missing:
        raise ValueError(f"SAE weights lack {', '.join('sae.' + m for m in missing)}")
    m, d = t["encoder.weight"].shape
    _check_shape(t["latent_bias"], (m,), "sae.latent_bias")
    _check_shape(t["pre_bias"], (d,), "sae.pre_bias")
    _check_shape(t["decoder.weight"], (d, m), "sae.decoder.weight")
    if not 1 <= k <= m:
        raise ValueError(f"sae_k={k} must be between 1 and the latent size {m}")
    sae = make_topk_sae(d, m, k, device="meta")
    state = {
        "W_enc": t["encoder.weight"].float().T.contiguous(),
        "b_enc": t["latent_bias"].float().contiguous(),
        "W_dec": t["decoder.weight"].float().T.contiguous(),
        "b_dec": t["pre_bias"].float().contiguous(),
    }
    sae.load_state_dict(state, assign=True)
    sae.cfg.device = str(device)
    return sae.to(device)


def sae_to_released(sae: SAE) -> dict[str, torch.Tensor]:
    """The released ``sae.*`` tensors for a sae-lens SAE."""
    return {
        "sae.encoder.weight": sae.W_enc.detach().T.contiguous(),
        "sae.latent_bias": sae.b_enc.detach().contiguous(),
        "sae.decoder.weight": sae.W_dec.detach().T.contiguous(),
        "sae.pre_bias": sae.b_dec.detach().contiguous(),
    }


def _check_shape(t: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")


def check_finite(sae: SAE, where: str = "SAE") -> None:
    """Raise if any SAE parameter holds NaN or inf."""
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if not torch.isfinite(getattr(sae, name)).all():
            raise ValueError(f"{where}: parameter {name} has non-finite values")


def save_sae(sae: SAE, directory: str | Path, meta: SAEMeta, extra: dict | None = None) -> Path:
    """Write sae-lens's format (cfg.json + weights) plus ``sarm_sae.json``."""
    directory = Path(directory)
    sae.save_model(directory)
    payload = meta.to_dict() | (extra or {})
    _write_json(directory / SAE_META_FILE, payload)
    return directory


def load_sae(directory: str | Path, device: str = "cpu") -> tuple[SAE, SAEMeta]:
    """Load an SAE saved by :func:`save_sae` (or any sae-lens TopK SAE directory)."""
    directory = Path(directory)
    if not (directory / "cfg.json").is_file():
        raise FileNotFoundError(f"no sae-lens SAE at {directory} (cfg.json missing)")
    try:
        sae = SAE.load_from_disk(directory, device=str(device))
    except SafetensorError as exc:
        raise unreadable(directory / SAE_WEIGHTS_FILE, exc) from exc
    except SAE_LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{directory}: the SAE cannot be loaded ({brief(exc)}); cfg.json must describe "
            f"the weights in {SAE_WEIGHTS_FILE} (d_in, d_sae, architecture): save the SAE again"
        ) from exc
    meta_path = directory / SAE_META_FILE
    meta = (
        _read_meta(meta_path)
        if meta_path.is_file()
        else SAEMeta(k=int(getattr(sae.cfg, "k", sae.cfg.d_sae)))
    )
    check_finite(sae, str(directory))
    return sae, meta


def _read_meta(path: Path) -> SAEMeta:
    try:
        return SAEMeta.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: not a valid SAE description ({brief(exc)}); it needs at least "
            '{"k": N} with N >= 1'
        ) from exc


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)
