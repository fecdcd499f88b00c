"""Scoring an explanation: balanced accuracy of detection and of fuzzing on held-out windows.

**Detection.** The held-out windows (a feature's active responses and as many inactive
ones, seeded, disjoint from the windows the explanation was written from) are labelled
by whether the feature fires at the scored token; a predictor (the ``stats`` rule,
or an LLM asked whether each window matches the explanation) says yes or no per
window. The store draws the inactive ones from the same source and subset as the
active ones (``split_windows(..., "matched")``), so naming a dataset scores chance.

**Fuzzing** (delphi's second score): each active held-out window is shown twice, once
highlighted at its firing token (its peak) and once at a seeded token of the same
window where the feature does not fire (:func:`fuzz_items`); a predictor says whether
the highlighted token is where the feature fires. Same windows, so only the token can
tell the two apart.

Both scores are ``(true positive rate + true negative rate) / 2``: 0.5 is chance, 1.0
a perfect predictor; None when either class is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sarm.explain.types import EvidenceWindow


def balanced_accuracy(predicted: Sequence[bool], actual: Sequence[bool]) -> float | None:
    """``(TPR + TNR) / 2`` of ``predicted`` against ``actual`` (None without both classes)."""
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions for {len(actual)} windows")
    pos = [p for p, a in zip(predicted, actual, strict=True) if a]
    neg = [p for p, a in zip(predicted, actual, strict=True) if not a]
    if not pos or not neg:
        return None
    return 0.5 * (sum(pos) / len(pos) + sum(not p for p in neg) / len(neg))


def detection_score(
    windows: Sequence[EvidenceWindow], predict: Callable[[EvidenceWindow], bool]
) -> float | None:
    """Balanced accuracy of ``predict`` over held-out ``windows``."""
    return balanced_accuracy([bool(predict(w)) for w in windows], [w.active for w in windows])


@dataclass(frozen=True)
class FuzzItem:
    """One active window highlighted at token ``index``; ``firing``: the feature fires there."""

    window: EvidenceWindow
    index: int
    firing: bool

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.window.tokens):
            raise ValueError(
                f"fuzz item of example {self.window.example_id}: index {self.index} outside "
                f"its {len(self.window.tokens)} tokens"
            )


def fuzz_items(windows: Sequence[EvidenceWindow], seed: int = 0) -> list[FuzzItem]:
    """Per active window with a peak: the peak (firing) and a seeded silent token (not).

    The silent token is drawn, seeded by ``(seed, example id)``, among the window's
    tokens with activation exactly 0; a window where every token fires gives only
    its positive.
    """
    items = []
    for w in windows:
        if not w.active or w.peak is None:
            continue
        items.append(FuzzItem(w, w.peak, True))
        silent = [i for i, a in enumerate(w.activations) if a == 0]
        if silent:
            rng = np.random.default_rng([seed, w.example_id])
            items.append(FuzzItem(w, silent[int(rng.integers(len(silent)))], False))
    return items


def fuzzing_score(
    items: Sequence[FuzzItem], predict: Callable[[EvidenceWindow, int], bool]
) -> float | None:
    """Balanced accuracy of ``predict(window, index)`` over :func:`fuzz_items`."""
    return balanced_accuracy(
        [bool(predict(i.window, i.index)) for i in items], [i.firing for i in items]
    )


@dataclass(frozen=True)
class Distribution:
    """Count, median and quartiles of a set of scores (None where there are none)."""

    n: int
    median: float | None
    q1: float | None
    q3: float | None

    @classmethod
    def of(cls, scores: Sequence[float | None]) -> Distribution:
        values = np.array([s for s in scores if s is not None], float)
        if not values.size:
            return cls(0, None, None, None)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return cls(int(values.size), float(median), float(q1), float(q3))

    def line(self) -> str:
        if not self.n:
            return "n=0"
        return f"n={self.n} median {self.median:.3f} [q1 {self.q1:.3f}, q3 {self.q3:.3f}]"
