"""Attribution helpers over :class:`~sarm.model.Score` objects.

A reward is ``sum_i c_i + b`` with ``c_i = w_i z_{T,i}``; these helpers slice that
sum for display without ever losing a term: every split they return adds back
up to the reward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sarm.model import Score


@dataclass
class TopContributions:
    """The ``n`` largest contributions by magnitude, the rest summed, and the bias."""

    top: list[tuple[int, float]]
    rest: float
    n_rest: int
    bias: float

    @property
    def total(self) -> float:
        return sum(c for _, c in self.top) + self.rest + self.bias


def top_contributions(contributions: Mapping[int, float], n: int = 20, bias: float = 0.0):
    """Split contributions into the top ``n`` by ``|c|`` and an aggregated remainder."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ranked = sorted(contributions.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    rest = ranked[n:]
    return TopContributions(ranked[:n], float(sum(c for _, c in rest)), len(rest), float(bias))


def score_top(score: Score, n: int = 20) -> TopContributions:
    return top_contributions(score.contributions, n, score.bias)


@dataclass
class PairDecomposition:
    """``r(chosen) - r(rejected) = sum_i w_i (z^c_i - z^r_i)``, feature by feature."""

    margin: float
    deltas: dict[int, float]
    chosen: dict[int, float]
    rejected: dict[int, float]

    def top(self, n: int = 20) -> TopContributions:
        return top_contributions(self.deltas, n, 0.0)


def pair_decomposition(chosen: Score, rejected: Score) -> PairDecomposition:
    """Per-feature contribution differences between two scores (the bias cancels)."""
    features = set(chosen.contributions) | set(rejected.contributions)
    deltas = {
        f: chosen.contributions.get(f, 0.0) - rejected.contributions.get(f, 0.0) for f in features
    }
    return PairDecomposition(
        margin=chosen.reward - rejected.reward,
        deltas=deltas,
        chosen=dict(chosen.contributions),
        rejected=dict(rejected.contributions),
    )
