"""Shift evaluation: how rewards and pairwise accuracy move on each set of responses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sarm.evaluate import PairIndex, pair_correct
from sarm.head import rewards
from sarm.interventions import Intervention, shifted_rewards
from sarm.latents import SparseLatents
from sarm.shift.rows import _disjoint, _mask, _weights, as_rows

ZERO_CHANGE = 1e-12  # mean |delta r| at or below this counts as "unchanged"


def _accuracy(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if len(correct) else None


@dataclass(frozen=True, eq=False)
class SetShift:
    """How one set of responses moved: rewards before/after and pairwise accuracy.

    Pairs count when both responses lie in the set.
    """

    name: str
    rows: np.ndarray
    rewards_before: np.ndarray
    rewards_after: np.ndarray
    n_pairs: int
    accuracy_before: float | None
    accuracy_after: float | None
    n_flipped: int

    def __post_init__(self) -> None:
        n = len(self.rows)
        if n == 0:
            raise ValueError(f"SetShift {self.name!r} has no rows")
        if self.rewards_before.shape != (n,) or self.rewards_after.shape != (n,):
            raise ValueError(f"SetShift {self.name!r}: reward arrays must have {n} entries")
        if (self.accuracy_before is None) != (self.n_pairs == 0):
            raise ValueError(f"SetShift {self.name!r}: accuracy is None exactly when n_pairs is 0")

    @classmethod
    def measure(
        cls,
        name: str,
        rows: np.ndarray,
        before: np.ndarray,
        after: np.ndarray,
        index: PairIndex,
        correct: tuple[np.ndarray, np.ndarray],
    ) -> SetShift:
        inside = _mask(rows, len(before))
        pairs = inside[index.chosen_row] & inside[index.rejected_row]
        ok_before, ok_after = correct[0][pairs], correct[1][pairs]
        return cls(
            name,
            rows,
            before[rows],
            after[rows],
            int(pairs.sum()),
            _accuracy(ok_before),
            _accuracy(ok_after),
            int((ok_before != ok_after).sum()),
        )

    @property
    def n_examples(self) -> int:
        return len(self.rows)

    @property
    def delta(self) -> np.ndarray:
        return self.rewards_after - self.rewards_before

    @property
    def mean_abs_delta(self) -> float:
        return float(np.abs(self.delta).mean())

    @property
    def mean_delta(self) -> float:
        return float(self.delta.mean())

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_after - self.accuracy_before

    def to_dict(self, rewards: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_examples": self.n_examples,
            "mean_reward_before": float(self.rewards_before.mean()),
            "mean_reward_after": float(self.rewards_after.mean()),
            "mean_delta": self.mean_delta,
            "mean_abs_delta": self.mean_abs_delta,
            "n_pairs": self.n_pairs,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "accuracy_change": self.accuracy_change,
            "n_flipped": self.n_flipped,
        }
        if rewards:
            out |= {
                "rows": self.rows.tolist(),
                "rewards_before": self.rewards_before.tolist(),
                "rewards_after": self.rewards_after.tolist(),
            }
        return out


@dataclass(frozen=True, eq=False)
class ShiftReport:
    """The effect of interventions on a target set, its complement, and all rows."""

    interventions: tuple[Intervention, ...]
    target: SetShift
    complement: SetShift
    overall: SetShift

    @property
    def selectivity(self) -> float | None:
        """``mean |delta r|`` on target / on complement; ``inf`` when only the target
        changed, None when neither did."""
        t, c = self.target.mean_abs_delta, self.complement.mean_abs_delta
        if c > ZERO_CHANGE:
            return t / c
        return math.inf if t > ZERO_CHANGE else None

    @property
    def selectivity_status(self) -> str:
        """``finite``, ``complement_unchanged`` (ratio is infinite) or ``unchanged``."""
        s = self.selectivity
        return "unchanged" if s is None else "complement_unchanged" if math.isinf(s) else "finite"

    def to_dict(self, rewards: bool = False) -> dict[str, Any]:
        """JSON-ready; ``selectivity`` is None unless finite (see ``selectivity_status``)."""
        s = self.selectivity
        return {
            "interventions": [i.to_dict() for i in self.interventions],
            "selectivity": s if s is not None and math.isfinite(s) else None,
            "selectivity_status": self.selectivity_status,
            "target": self.target.to_dict(rewards),
            "complement": self.complement.to_dict(rewards),
            "overall": self.overall.to_dict(rewards),
        }

    def to_metrics(self) -> dict[str, float]:
        """Flat finite numbers (what ``store.save_head(metrics=...)`` takes)."""
        out: dict[str, float] = {}
        s = self.selectivity
        if s is not None and math.isfinite(s):
            out["selectivity"] = s
        for part in (self.target, self.complement, self.overall):
            for key in ("mean_abs_delta", "mean_delta", "accuracy_before", "accuracy_after"):
                value = getattr(part, key)
                if value is not None:
                    out[f"{part.name}_{key}"] = float(value)
        return out

    def distribution_frame(self) -> pd.DataFrame:
        """Long frame ``set, stage, reward`` (target/complement x before/after), for plots."""
        parts = []
        for part in (self.target, self.complement):
            for stage, values in (("before", part.rewards_before), ("after", part.rewards_after)):
                parts.append(pd.DataFrame({"set": part.name, "stage": stage, "reward": values}))
        return pd.concat(parts, ignore_index=True)


def evaluate_shift(
    latents: SparseLatents,
    weight: np.ndarray,
    bias: float,
    interventions: Sequence[Intervention],
    target_rows: object,
    complement_rows: object,
    pair_index: PairIndex,
    *,
    base_rewards: np.ndarray | None = None,
) -> ShiftReport:
    """Rewards and pairwise accuracy on target and complement before and after.

    Rewards after come from the touched latent columns only
    (:func:`sarm.interventions.shifted_rewards`).
    """
    n = latents.n
    target = as_rows(target_rows, n, "target")
    complement = as_rows(complement_rows, n, "complement")
    _disjoint(target, complement)
    if pair_index.n_rows > n:
        raise ValueError(f"pair_index uses row {pair_index.n_rows - 1}; the latents have {n}")
    if base_rewards is None:
        before = rewards(latents, _weights(weight, latents.d_sae), bias)
    else:
        before = np.asarray(base_rewards, dtype=np.float64)
        if before.shape != (n,):
            raise ValueError(f"base_rewards must have shape ({n},), got {before.shape}")
    after = shifted_rewards(latents, weight, bias, interventions, before)
    correct = (pair_correct(before, pair_index), pair_correct(after, pair_index))
    sets = [
        SetShift.measure(name, rows, before, after, pair_index, correct)
        for name, rows in (
            ("target", target),
            ("complement", complement),
            ("overall", np.arange(n)),
        )
    ]
    return ShiftReport(tuple(interventions), *sets)
