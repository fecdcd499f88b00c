"""The linear reward head over SAE latents: weights, edits, hashing, save/load."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HEAD_FILE = "head.safetensors"


@dataclass
class LinearHead:
    """``r = w . z + b`` with ``w`` of shape ``[m]`` (float32, CPU) and a scalar bias."""

    weight: torch.Tensor
    bias: float = 0.0

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weight).detach().to("cpu", torch.float32)
        if w.dim() == 2 and w.shape[0] == 1:
            w = w[0]
        if w.dim() != 1:
            raise ValueError(f"head weight must have shape [m] or [1, m], got {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            bad = torch.nonzero(~torch.isfinite(w)).flatten()[:5].tolist()
            raise ValueError(f"head weight has non-finite values (features {bad} ...)")
        if not np.isfinite(float(self.bias)):
            raise ValueError(f"head bias must be finite, got {self.bias}")
        self.weight = w.contiguous()
        self.bias = float(self.bias)

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    def hash(self) -> str:
        """A short content hash (weights and bias) identifying this head."""
        h = hashlib.sha256(self.weight.numpy().tobytes())
        h.update(np.float64(self.bias).tobytes())
        return h.hexdigest()[:16]

    def with_weights(self, overrides: Mapping[int, float]) -> LinearHead:
        """A copy with ``weight[i] = value`` for each ``i, value`` in ``overrides``."""
        w = self.weight.clone()
        for fid, value in overrides.items():
            self._check_feature(fid)
            w[int(fid)] = float(value)
        return LinearHead(w, self.bias)

    def changed_weights(self, other: LinearHead) -> dict[int, tuple[float, float]]:
        """``{feature: (self weight, other weight)}`` where the two heads differ."""
        if other.size != self.size:
            raise ValueError(f"heads have different sizes: {self.size} vs {other.size}")
        diff = torch.nonzero(self.weight != other.weight).flatten().tolist()
        return {i: (float(self.weight[i]), float(other.weight[i])) for i in diff}

    def _check_feature(self, fid: int) -> None:
        if not 0 <= int(fid) < self.size:
            raise ValueError(f"feature id {fid} is out of range 0..{self.size - 1}")

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"score.weight": self.weight.unsqueeze(0).contiguous()}
        if self.bias != 0.0:
            out["score.bias"] = torch.tensor([self.bias], dtype=torch.float32)
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], where: str = "head") -> LinearHead:
        if "score.weight" not in tensors:
            raise ValueError(f"{where}: no 'score.weight' tensor")
        w = tensors["score.weight"]
        if w.dim() == 2 and w.shape[0] != 1:
            raise ValueError(
                f"{where}: score.weight has shape {tuple(w.shape)}; a reward head has one output"
            )
        bias = tensors.get("score.bias")
        return cls(w, float(bias.flatten()[0]) if bias is not None else 0.0)

    def save(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
        """Write ``score.weight [1, m]`` (and ``score.bias``) as safetensors, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(self.to_tensors(), str(tmp), metadata=dict(metadata or {}))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearHead:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"head file not found: {path}")
        return cls.from_tensors(load_file(str(path)), where=str(path))
