"""Scoring an explanation: balanced detection accuracy on held-out windows.

The held-out windows (a feature's active responses and as many inactive ones,
seeded, disjoint from the windows the explanation was written from) are labelled
by whether the feature fires at the scored token; a predictor (the ``stats`` rule,
or an LLM asked whether each window matches the explanation) says yes or no per
window. The score is ``(true positive rate + true negative rate) / 2``: 0.5 is
chance, 1.0 a perfect detector; None when either class is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
