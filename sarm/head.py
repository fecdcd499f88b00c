"""The linear reward head: the one place where ``r = w . z + b`` is computed.

A :class:`Head` is a weight vector over the SAE latents, a bias and optional
weight overrides (an edit, as the dashboard's sliders or a preference shift
make them). It alone turns :class:`~sarm.latents.SparseLatents` into
contributions ``c_i = w_i z_i`` and rewards ``r = sum_i c_i + b``: the model,
the feature store, the editor, the audits and the exports all call it.

Overrides are rounded to float32 (the stored head's precision) on the way in,
so a preview computed from an edit and the head that is exported from it agree
bit for bit. Rewards under an edit are updated from the base head's rewards
through the touched columns only, so moving one slider costs microseconds even
at hundreds of thousands of examples.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from sarm.column_product import add_column_product
from sarm.constants import HEAD_WEIGHTS_FILE
from sarm.errors import unreadable
from sarm.latents import SparseLatents

__all__ = ["Head", "as_weight", "contributions", "rewards"]


def contributions(latents: SparseLatents, weights: np.ndarray) -> Float[np.ndarray, " nnz"]:
    """``c = w_i * z_i`` for every stored non-zero of ``latents``, in float64.

    ``weights`` is a full ``[d_sae]`` vector (float32 for a stored head, float64
    for what-if previews such as :mod:`sarm.interventions`).
    """
    w = np.asarray(weights, dtype=np.float64)
    _check_latents(latents, w.shape)
    return latents.values.astype(np.float64) * w[latents.indices]


def _check_latents(latents: object, weight_shape: tuple[int, ...]) -> None:
    if not isinstance(latents, SparseLatents):
        raise TypeError(f"expected SparseLatents, got {type(latents).__name__}")
    if weight_shape != (latents.d_sae,):
        raise ValueError(
            f"the head has weights of shape {weight_shape} but the latents have "
            f"{latents.d_sae} features"
        )


def rewards(
    latents: SparseLatents, weights: np.ndarray, bias: float = 0.0
) -> Float[np.ndarray, " n"]:
    """``r = sum_i w_i z_i + b`` for every row of ``latents``, in float64."""
    terms = contributions(latents, weights)
    return np.bincount(latents.row_ids, weights=terms, minlength=latents.n) + float(bias)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_weight(value: object, what: str = "weight") -> float:
    """``value`` as a finite float rounded to float32 (the head's precision)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)) or abs(float(value)) > FLOAT32_MAX:
        raise ValueError(
            f"{what} must be finite (and within float32, |w| <= 3.4e38), got {value!r}"
        )
    return float(np.float32(value))


@dataclass(frozen=True, eq=False)
class Head:
    """``r = w . z + b``: base weights ``[d_sae]``, a bias, and weight overrides.

    ``weight`` is the base (saved) head as a read-only float32 array; torch
    tensors and ``[1, d_sae]`` rows are accepted. ``overrides`` maps feature ids
    to new weights; entries equal to the base weight are dropped, so it lists
    exactly the changed features. ``name`` names the base version (for
    manifests and the store's head versions).
    """

    weight: Float[np.ndarray, " d_sae"]
    bias: float = 0.0
    overrides: Mapping[int, float] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        w = _weight_vector(self.weight)
        if not math.isfinite(float(self.bias)):
            raise ValueError(f"head bias must be finite, got {self.bias}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "overrides", _clean_overrides(self.overrides, w))
        object.__setattr__(self, "_base_rewards", weakref.WeakKeyDictionary())

    # ------------------------------------------------------------------ shape
    @property
    def size(self) -> int:
        """Number of weights (the SAE's latent count)."""
        return int(self.weight.size)

    @property
    def weights(self) -> Float[np.ndarray, " d_sae"]:
        """The effective weights: base weights with the overrides applied (float32)."""
        if not self.overrides:
            return self.weight
        w = self.weight.copy()
        for fid, value in self.overrides.items():
            w[fid] = value
        w.flags.writeable = False
        return w

    def weight_of(self, feature: int) -> float:
        """The effective weight of one feature."""
        return float(self.overrides.get(int(feature), self.weight[self.check_feature(feature)]))

    def check_feature(self, feature: object) -> int:
        """``feature`` as an int in ``0..size-1`` (ValueError otherwise)."""
        if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
            raise ValueError(f"feature ids must be integers, got {feature!r}")
        if not 0 <= int(feature) < self.size:
            raise ValueError(f"feature id {feature} is out of range 0..{self.size - 1}")
        return int(feature)

    # ------------------------------------------------------------------ edits
    def base(self) -> Head:
        """This head without its overrides."""
        return self if not self.overrides else self._sibling({})

    def _sibling(self, overrides: Mapping[int, float]) -> Head:
        """A head on the same base weights and bias: it shares the cached base rewards."""
        out = Head(self.weight, self.bias, overrides, self.name)
        object.__setattr__(out, "_base_rewards", self._base_rewards)
        return out

    def edit(self, overrides: Mapping[int, float]) -> Head:
        """A copy with ``weight[f] = value`` for each ``f, value`` in ``overrides``.

        Earlier overrides stay unless replaced; setting a feature back to its
        base weight removes its override.
        """
        merged = {**self.overrides, **{self.check_feature(f): v for f, v in overrides.items()}}
        return self._sibling(merged)

    def take(self, weights: Sequence[float] | np.ndarray, features: Sequence[int]) -> Head:
        """A copy whose ``features`` take their values from a full weight vector ``weights``."""
        ids = [self.check_feature(f) for f in features]
        values = np.asarray(weights)
        if values.shape != (self.size,):
            raise ValueError(
                f"take needs a full weight vector of shape ({self.size},), got {values.shape}"
            )
        return self.edit({f: values[f] for f in ids})

    def applied(self, name: str = "") -> Head:
        """The edit folded into new base weights (no overrides), named ``name``."""
        return Head(self.weights, self.bias, name=name or self.name)

    def changes(self) -> list[tuple[int, float, float]]:
        """``(feature, old, new)`` for every override, largest ``|new - old|`` first."""
        rows = [(f, float(self.weight[f]), v) for f, v in self.overrides.items()]
        return sorted(rows, key=lambda r: (-abs(r[2] - r[1]), r[0]))

    def changed_weights(self, other: Head) -> dict[int, tuple[float, float]]:
        """``{feature: (self weight, other weight)}`` where the effective weights differ."""
        if other.size != self.size:
            raise ValueError(f"heads have different sizes: {self.size} vs {other.size}")
        a, b = self.weights, other.weights
        return {int(i): (float(a[i]), float(b[i])) for i in np.flatnonzero(a != b)}

    def hash(self) -> str:
        """A short content hash of the effective weights and the bias."""
        h = hashlib.sha256(np.ascontiguousarray(self.weights).tobytes())
        h.update(np.float64(self.bias).tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ the formula
    def contributions(self, latents: SparseLatents) -> Float[np.ndarray, " nnz"]:
        """``c = w_i * z_i`` for every stored non-zero of ``latents`` (float64)."""
        return contributions(latents, self.weights)

    def rewards(self, latents: SparseLatents) -> Float[np.ndarray, " n"]:
        """``r = sum_i w_i z_i + b`` for every row of ``latents`` (float64).

        The base head's rewards are computed once per latents object and
        cached; an edit then adds ``(w_new - w_old) z`` over the changed
        features' columns only (the CSC view of the latents): the cost grows
        with the changed features' non-zeros, not with the dataset.
        """
        _check_latents(latents, self.weight.shape)
        base = self._base_rewards.get(latents)
        if base is None:
            base = rewards(latents, self.weight, self.bias)
            self._base_rewards[latents] = base
        if not self.overrides:
            return base.copy()
        feats = np.fromiter(self.overrides, dtype=np.int64, count=len(self.overrides))
        deltas = np.array([self.overrides[f] for f in feats.tolist()], dtype=np.float64)
        deltas -= self.weight[feats].astype(np.float64)
        return add_column_product(base.copy(), latents, feats, deltas)

    # ------------------------------------------------------------------ files
    def to_tensors(self) -> dict[str, np.ndarray]:
        """``score.weight [1, m]`` (and ``score.bias`` when non-zero) of the effective head."""
        out = {"score.weight": np.ascontiguousarray(self.weights[None, :])}
        if self.bias != 0.0:
            out["score.bias"] = np.array([self.bias], dtype=np.float32)
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, object], where: str = "head") -> Head:
        """The head in ``score.weight`` / ``score.bias`` arrays or torch tensors (released layout)."""
        if "score.weight" not in tensors:
            raise ValueError(f"{where}: no 'score.weight' tensor")
        w = _as_array(tensors["score.weight"])
        if w.ndim == 2 and w.shape[0] != 1:
            raise ValueError(
                f"{where}: score.weight has shape {tuple(w.shape)}; a reward head has one output"
            )
        bias = tensors.get("score.bias")
        return cls(w, float(_as_array(bias).reshape(-1)[0]) if bias is not None else 0.0)

    def save(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
        """Write the effective head as safetensors, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(self.to_tensors(), str(tmp), metadata=dict(metadata or {}))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Head:
        """Read a head written by :meth:`save` (or any ``score.weight`` safetensors)."""
        path = Path(path)
        if path.is_dir():
            path = path / HEAD_WEIGHTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"head file not found: {path}")
        try:
            tensors = load_file(str(path))
        except SafetensorError as exc:
            raise unreadable(path, exc) from exc
        return cls.from_tensors(tensors, where=str(path))

    def __repr__(self) -> str:
        edits = f", {len(self.overrides)} overrides" if self.overrides else ""
        name = f"{self.name!r}, " if self.name else ""
        return f"Head({name}d_sae={self.size}, bias={self.bias:g}{edits})"


def _as_array(value: object) -> np.ndarray:
    """A numpy copy of an array or a torch tensor (on any device, any float dtype)."""
    if hasattr(value, "detach"):  # a torch tensor; this module does not import torch
        value = value.detach().cpu().float().numpy()
    return np.array(value, dtype=np.float32, copy=True)


def _weight_vector(weight: object) -> np.ndarray:
    w = _as_array(weight)
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 1 or not w.size:
        raise ValueError(f"head weight must have shape [m] or [1, m], got {tuple(w.shape)}")
    if not np.isfinite(w).all():
        bad = np.flatnonzero(~np.isfinite(w))[:5].tolist()
        raise ValueError(f"head weight has non-finite values (features {bad} ...)")
    w.flags.writeable = False
    return w


def _clean_overrides(overrides: Mapping[int, float], weight: np.ndarray) -> dict[int, float]:
    clean: dict[int, float] = {}
    for fid, value in dict(overrides).items():
        if isinstance(fid, bool) or not isinstance(fid, (int, np.integer)):
            raise ValueError(f"feature ids must be integers, got {fid!r}")
        if not 0 <= int(fid) < weight.size:
            raise ValueError(f"feature id {fid} is out of range 0..{weight.size - 1}")
        new = as_weight(value, f"weight of feature {fid}")
        if new != float(weight[int(fid)]):
            clean[int(fid)] = new
    return dict(sorted(clean.items()))
