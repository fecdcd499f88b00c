"""Step 4 of the default's build: the reward head with the SAE error term, chosen on dev.

The SAE-only head (``r = w . z + b``) trails the dense probe on the same layer
off the training distribution. This step keeps the shipped SAE and trains
three heads on the train split's captures, all in the one formula of
:mod:`sarm.residual` (the error is feature ``m``):

- ``sae``: Bradley-Terry on the SAE latents alone (the previous default);
- ``joint``: Bradley-Terry on the latents and the SAE error together
  (:func:`sarm.train.head.train_error_head`), weight decay tuned on dev;
- ``decomposed``: the tuned dense probe written through the SAE exactly
  (:func:`sarm.residual.decompose_dense`): every feature is paid what its
  decoder direction is worth to the probe, the residual keeps the rest.

The head with the best dev macro accuracy ships (dev is the only data the
choice sees). Every head, the dense probe and the length baselines are then
reported on test, xstest and every public held-out set in ``data/heldout``,
with 95% intervals and the error term's share of reward variance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sarm.datasets.heldout import HELDOUT_DIR, heldout_sets
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.residual import (
    ErrorReadout,
    decompose_dense,
    error_parts,
    error_share,
    with_error_column,
)
from sarm.saes import load_sae, sarm_decode, sarm_encode
from sarm.train.head import train_error_head
from workflows.default_sarm.data import load_split
from workflows.default_sarm.report import length_baselines, split_report
from workflows.default_sarm.sweep import SweepData, dev_scores, head_config

ERROR_GRID = (1e-3, 1e-2)  # weight decay of the joint head


@dataclass
class Encoded:
    """One split's SAE view of ``u_T``: TopK latents and the reconstruction error."""

    values: torch.Tensor  # [n, k]
    indices: torch.Tensor  # [n, k]
    errors: torch.Tensor  # [n, d]

    @classmethod
    def of(cls, sae, u: torch.Tensor, k: int) -> Encoded:
        vals, idxs, errs = [], [], []
        with torch.inference_mode():
            for chunk in u.float().split(4096):
                v, i = sarm_encode(sae, chunk, k)
                vals.append(v)
                idxs.append(i)
                errs.append(chunk - sarm_decode(sae, v, i))
        return cls(torch.cat(vals), torch.cat(idxs), torch.cat(errs))

    def fvu(self, u: torch.Tensor) -> float:
        """Fraction of the variance of ``u`` the SAE leaves unexplained."""
        centred = u.double() - u.double().mean(0)
        return float((self.errors.double() ** 2).sum() / (centred**2).sum())

    def dead_fraction(self, d_sae: int) -> float:
        """Share of latents never in any row's TopK."""
        return 1.0 - float(np.unique(self.indices.numpy()).size) / d_sae

    def latents(self, d_sae: int, readout: ErrorReadout | None) -> SparseLatents:
        """What a SARM with ``readout`` gives its head for these rows."""
        lat = SparseLatents.from_topk(self.values.numpy(), self.indices.numpy(), d_sae)
        if readout is None:
            return lat
        return with_error_column(lat, readout.project(self.errors.numpy()))


@dataclass(frozen=True)
class Candidate:
    """A head and the readout its error column needs (None: SAE latents only)."""

    name: str
    head: Head
    readout: ErrorReadout | None
    settings: dict


def rewards_of(c: Candidate, enc: Encoded, d_sae: int) -> np.ndarray:
    return c.head.rewards(enc.latents(d_sae, c.readout))


def candidates(
    data: SweepData,
    train: Encoded,
    dev: Encoded,
    d_sae: int,
    sae_head: Head,
    dense_head: Head,
    w_dec: np.ndarray,
    b_dec: np.ndarray,
) -> list[tuple[Candidate, dict]]:
    """Every head of the step with its dev scores (``sae_head``/``dense_head`` as shipped)."""
    out = [(Candidate("sae", sae_head, None, {}), None)]
    index = data.train_pairs
    for decay in ERROR_GRID:
        head, readout, _ = train_error_head(
            train.values,
            train.indices,
            train.errors,
            index.chosen_row,
            index.rejected_row,
            head_config(decay, 0.0, data.seed),
            n_latents=d_sae,
            groups=index.group,
            pair_weights=data.train_weights,
        )
        out.append((Candidate(f"joint-wd{decay:g}", head, readout, {"weight_decay": decay}), None))
    head, readout = decompose_dense(dense_head.weight, dense_head.bias, w_dec, b_dec)
    out.append((Candidate("decomposed", head, readout, {"from": "dense baseline"}), None))
    return [(c, dev_scores(data, rewards_of(c, dev, d_sae))) for c, _ in out]


def choose(scored: list[tuple[Candidate, dict]]) -> Candidate:
    """The best dev macro accuracy (ties: the earlier, simpler head)."""
    best = max(range(len(scored)), key=lambda i: (scored[i][1]["dev_macro"], -i))
    return scored[best][0]


def evaluate_set(split, u: torch.Tensor, enc: Encoded, heads, dense_head: Head, d_sae: int):
    """Per-set figures: every head, dense, length; SAE quality; error shares."""
    rewards = {"dense": dense_head.rewards(SparseLatents.from_dense(u.numpy()))}
    shares = {}
    for c in heads:
        lat = enc.latents(d_sae, c.readout)
        error_feature = d_sae if c.readout is not None else None
        features, error = error_parts(lat, c.head.weights, error_feature)
        rewards[c.name] = features + error + c.head.bias
        shares[c.name] = round(error_share(features, error), 4)
    report = split_report(split, {**rewards, **length_baselines(split)})
    return {
        "report": report,
        "error_share": shares,
        "fvu_u_T": round(enc.fvu(u), 4),
        "dead_fraction": round(enc.dead_fraction(d_sae), 4),
    }


def centred_candidate(c: Candidate, train: Encoded, d_sae: int) -> Candidate:
    """``c`` with the bias that centres its rewards over the train responses at 0."""
    base = Head(c.head.weight, 0.0)
    bias = -float(base.rewards(train.latents(d_sae, c.readout)).mean())
    return Candidate(c.name, Head(c.head.weight, bias), c.readout, c.settings)


def decoder_of(sae) -> tuple[np.ndarray, np.ndarray]:
    """``(W_dec [m, d], b_dec [d])`` of an SAE as float64 arrays."""
    return sae.W_dec.detach().double().numpy(), sae.b_dec.detach().double().numpy()


def audit_columns(enc: Encoded, c: Candidate, d_sae: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, indices) [n, k (+1)]``: the TopK latents, then the SAE-error column if read."""
    values, indices = enc.values.numpy(), enc.indices.numpy()
    if c.readout is None:
        return values, indices
    errors = c.readout.project(enc.errors.numpy()).astype(np.float32)[:, None]
    column = np.full((len(values), 1), d_sae, indices.dtype)
    return np.hstack([values, errors]), np.hstack([indices, column])


AUDIT_SET_NAMES = ("test", "xstest")
KEPT_WITH_SAE = ("evidence", "bias_audit.json", "bias_samples.npz")
MANIFEST_KEPT_WITH_SAE = ("evidence",)  # the manifest's record of the kept files


def evaluation_sets(plan) -> list[tuple[str, Path | None]]:
    """``(name, root)`` of every set the build reports: test, xstest, then the held-out sets.

    A held-out set is reported when its capture exists (``capture_heldout``).
    """
    sets: list[tuple[str, Path | None]] = [(name, None) for name in AUDIT_SET_NAMES]
    for name in heldout_sets():
        if (plan.root() / "capture" / name).is_dir():
            sets.append((name, HELDOUT_DIR))
    return sets


def capture_heldout(plan, backbone, progress: bool = True) -> list[str]:
    """Capture every held-out set (resumable, like the splits); returns their names."""
    from workflows.default_sarm.capture import capture_split

    names = heldout_sets()
    for name in names:
        capture_split(
            load_split(name, root=HELDOUT_DIR, limit=plan.limit), backbone, plan, progress
        )
    return names


@dataclass
class ShippedSAE:
    """The SAE of an earlier build, reused as it ships (float16 values), with its metrics."""

    sae: object
    metrics: dict


def shipped_sae(directory: Path) -> ShippedSAE:
    """The SAE in ``directory/sae`` and the metrics its manifest recorded."""
    sae, _ = load_sae(directory / "sae")
    manifest = json.loads((directory / "manifest.json").read_text())
    return ShippedSAE(sae.float(), dict(manifest["sae"]["metrics"]))
