"""The SAE error readout: how a SARM pays for what its SAE does not reconstruct.

An SAE reconstructs the standardised hidden state ``u_T`` only in part; the
rest, ``e = u_T - u_hat_T``, is what the paper's bottleneck throws away. A
SARM may keep one number of it: ``z_err = v . e`` along a fixed unit direction
``v`` (the *error readout*). The number is appended to the latents as one more
column, feature ``m`` (the SAE's latent count), so the head weighs it like any
feature and the one reward formula of :mod:`sarm.head` still holds::

    r = sum_i w_i z_i + w_m z_err + b  =  w . z + w_err . e + b,   w_err = w_m v

Every score therefore lists the error's contribution beside the features'
(the honest residual); an edit that sets ``w_m = 0`` stops paying for it, and
its share of the reward variance says how much of the reward no feature
explains. The readout is part of the latent pipeline, like the SAE: it is saved
with the model (``error_readout.safetensors``), counted in the model's
fingerprint, and a head of ``m + 1`` weights reads its column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from sarm.errors import unreadable
from sarm.head import Head, rewards
from sarm.latents import SparseLatents

__all__ = [
    "ERROR_NAME",
    "ERROR_READOUT_FILE",
    "ErrorReadout",
    "decompose_dense",
    "error_parts",
    "error_share",
    "split_error_weights",
    "with_error_column",
]

ERROR_READOUT_FILE = "error_readout.safetensors"
DIRECTION_KEY = "error_readout.direction"
UNIT_TOLERANCE = 1e-3
ERROR_NAME = "SAE error (what no feature explains)"


@dataclass(frozen=True, eq=False)
class ErrorReadout:
    """A unit direction ``v [d]`` in the SAE's input space; ``z_err = v . (u - u_hat)``."""

    direction: Float[np.ndarray, " d"]

    def __post_init__(self) -> None:
        v = np.array(self.direction, dtype=np.float32, copy=True).reshape(-1)
        if v.ndim != 1 or not v.size:
            raise ValueError(f"the error readout must be a vector [d], got shape {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("the error readout direction has non-finite values")
        norm = float(np.linalg.norm(v.astype(np.float64)))
        if abs(norm - 1.0) > UNIT_TOLERANCE:
            raise ValueError(f"the error readout direction must have unit norm, got {norm:.6g}")
        v.flags.writeable = False
        object.__setattr__(self, "direction", v)

    @property
    def d_in(self) -> int:
        return int(self.direction.size)

    @classmethod
    def from_weights(cls, w_err: np.ndarray) -> tuple[ErrorReadout, float]:
        """The readout and the head weight ``w_m`` with ``w_m v = w_err`` (``w_err != 0``)."""
        w = np.asarray(w_err, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(w))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("the error weights must be finite and not all zero")
        return cls(w / norm), norm

    def values(self, u: np.ndarray, reconstruction: np.ndarray) -> Float[np.ndarray, " n"]:
        """``v . (u - u_hat)`` per row of ``u [n, d]`` (float32 inputs, float64 sum)."""
        u, rec = np.asarray(u, np.float64), np.asarray(reconstruction, np.float64)
        if u.shape != rec.shape or u.ndim != 2 or u.shape[1] != self.d_in:
            raise ValueError(
                f"u {u.shape} and its reconstruction {rec.shape} must be [n, {self.d_in}]"
            )
        return self.project(u - rec)

    def project(self, errors: np.ndarray) -> Float[np.ndarray, " n"]:
        """``v . e`` per row of the reconstruction errors ``e [n, d]`` (float64)."""
        return np.asarray(errors, np.float64) @ self.direction.astype(np.float64)

    def digest(self) -> bytes:
        return hashlib.sha256(self.direction.tobytes()).digest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file({DIRECTION_KEY: self.direction.copy()}, str(tmp))
        return tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ErrorReadout:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"error readout file not found: {path}")
        try:
            tensors = load_file(str(path))
        except SafetensorError as exc:
            raise unreadable(path, exc) from exc
        if DIRECTION_KEY not in tensors:
            raise ValueError(f"{path}: no {DIRECTION_KEY!r} tensor")
        try:
            return cls(tensors[DIRECTION_KEY])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def with_error_column(latents: SparseLatents, errors: np.ndarray) -> SparseLatents:
    """``latents`` with one more feature, id ``d_sae``, holding ``errors`` (one per row)."""
    errors = np.asarray(errors, dtype=np.float32).reshape(-1)
    if errors.shape != (latents.n,):
        raise ValueError(f"{errors.size} error values for {latents.n} rows")
    column = latents.d_sae
    indptr = latents.indptr + np.arange(latents.n + 1)
    indices = np.empty(latents.nnz + latents.n, np.int32)
    values = np.empty(latents.nnz + latents.n, np.float32)
    last = indptr[1:] - 1  # the new entry ends each row
    keep = np.ones(indices.size, bool)
    keep[last] = False
    indices[keep], values[keep] = latents.indices, latents.values
    indices[last], values[last] = column, errors
    return SparseLatents(indptr, indices, values, column + 1, latents.example_ids)


def error_share(feature_part: np.ndarray, error_part: np.ndarray) -> float:
    """``var(error part) / var(reward)`` over a set of responses (0 when the reward is flat)."""
    f, e = np.asarray(feature_part, np.float64), np.asarray(error_part, np.float64)
    total = float(np.var(f + e))
    return float(np.var(e) / total) if total > 0 else 0.0


def error_parts(
    latents: SparseLatents, weights: np.ndarray, error_feature: int | None
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """Per row, ``(reward minus bias minus the error term, the error term)`` under ``weights``."""
    total = rewards(latents, weights)
    error = np.zeros(latents.n)
    if error_feature is not None:
        hit = latents.indices == error_feature
        values = latents.values[hit].astype(np.float64) * float(weights[error_feature])
        np.add.at(error, latents.row_ids[hit], values)
    return total - error, error


def split_error_weights(
    weight: np.ndarray, n_latents: int, bias: float = 0.0
) -> tuple[Head, ErrorReadout]:
    """A head over ``[z, e]`` (``n_latents + d`` weights) as a head of ``n_latents + 1``
    weights and the error readout: ``w_z . z + w_err . e = w_z . z + |w_err| (v . e)``."""
    w = np.asarray(weight, np.float64).reshape(-1)
    if w.size <= n_latents:
        raise ValueError(f"{w.size} weights cannot hold {n_latents} latents and an error vector")
    readout, scale = ErrorReadout.from_weights(w[n_latents:])
    return Head(np.append(w[:n_latents], scale).astype(np.float32), bias), readout


def decompose_dense(
    dense_weight: np.ndarray, dense_bias: float, w_dec: np.ndarray, b_dec: np.ndarray
) -> tuple[Head, ErrorReadout]:
    """The dense probe ``r = w_d . u + b`` written through the SAE, exactly:

    ``u = W_dec^T z + b_dec + e``, so ``r = sum_i (d_i . w_d) z_i + w_d . e + (b + w_d . b_dec)``
    with ``d_i`` the decoder row of latent ``i``: each feature is paid what its
    reconstructed direction is worth to the probe, and the residual keeps the rest.
    """
    w_d = np.asarray(dense_weight, np.float64).reshape(-1)
    w_dec, b_dec = np.asarray(w_dec, np.float64), np.asarray(b_dec, np.float64).reshape(-1)
    if w_dec.ndim != 2 or w_dec.shape[1] != w_d.size or b_dec.size != w_d.size:
        raise ValueError(
            f"decoder {w_dec.shape} and bias {b_dec.shape} do not match a probe of {w_d.size}"
        )
    head, readout = split_error_weights(np.concatenate([w_dec @ w_d, w_d]), w_dec.shape[0])
    return Head(head.weight, float(dense_bias) + float(w_d @ b_dec)), readout
