"""Detection accuracy: how well an explanation predicts where its feature fires.

The one formula explainers score with (delphi-style detection): balanced
accuracy over held-out windows, the mean of the hit rate on windows where the
feature fires and the correct-rejection rate on windows where it does not, so a
predictor that says "yes" to everything scores 0.5 whatever the class balance.
"""

from __future__ import annotations

from collections.abc import Sequence


def balanced_accuracy(predicted: Sequence[bool], actual: Sequence[bool]) -> float:
    """Mean of the true-positive and true-negative rates; needs both classes in ``actual``."""
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions for {len(actual)} windows")
    positives = [p for p, a in zip(predicted, actual, strict=True) if a]
    negatives = [p for p, a in zip(predicted, actual, strict=True) if not a]
    if not positives or not negatives:
        raise ValueError(
            f"scoring needs windows where the feature fires and where it does not "
            f"({len(positives)} active, {len(negatives)} inactive)"
        )
    hit_rate = sum(positives) / len(positives)
    rejection_rate = sum(not p for p in negatives) / len(negatives)
    return (hit_rate + rejection_rate) / 2
