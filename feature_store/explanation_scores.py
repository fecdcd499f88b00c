"""The scores of a ``stats`` explanation, and the report comparing explainers and scorers.

Three scores per explanation (``sarm.explain.scoring``): detection on the held-out
windows with negatives from a seeded pool of any source (``uncontrolled``, the
score before issue 22), detection with negatives from the positives' own source and
subset (``controlled``, what ``score`` holds now) and fuzzing on the held-out active
windows. :func:`score_report` sets the ``stats-1`` explainer (which named a dominant
source) beside ``stats-2`` under all three, and counts explanations that say nothing
but dataset shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from sarm.explain.scoring import Distribution, detection_score, fuzz_items, fuzzing_score
from sarm.explain.stats import LEGACY_VERSION, VERSION, StatsExplanation, only_dataset_shares
from sarm.explain.types import EvidenceWindow, Explanation

SCORES = ("uncontrolled", "controlled", "fuzzing")


def rule_scores(
    found: StatsExplanation,
    windows: Mapping[str, Sequence[EvidenceWindow]],
    meta: Mapping[int, Mapping[str, str]],
) -> dict[str, object]:
    """The three scores of ``found``'s rule on one feature's ``heldout`` and ``matched``
    windows, with the counts they were measured on."""
    rule = found.rule

    def predict(w: EvidenceWindow) -> bool:
        return rule.predict(w, meta.get(w.example_id))

    heldout, matched = windows.get("heldout", []), windows.get("matched", [])
    items = fuzz_items(heldout)
    return {
        "uncontrolled": detection_score(heldout, predict),
        "controlled": detection_score(matched, predict),
        "fuzzing": fuzzing_score(items, rule.predict_token),
        "n_positives": sum(w.active for w in heldout),
        "n_negatives": sum(not w.active for w in heldout),
        "n_matched_negatives": sum(not w.active for w in matched),
        "n_fuzz": len(items),
    }


@dataclass(frozen=True)
class ScoreReport:
    """Per explainer (``stats-1``, ``stats-2``) and score, the distribution; per
    explainer, how many texts are only dataset shares."""

    n: int
    distributions: dict[str, dict[str, Distribution]]
    share_only: dict[str, int]

    def lines(self) -> list[str]:
        out = [f"scores of {self.n} features (n, median, quartiles):"]
        for explainer, scores in self.distributions.items():
            for name in SCORES:
                out.append(f"  {explainer:<8} {name:<13} {scores[name].line()}")
        out.append(
            "explanations that are only dataset shares: "
            + "; ".join(f"{k} {v} of {self.n}" for k, v in self.share_only.items())
        )
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "distributions": {
                e: {s: asdict(d) for s, d in scores.items()}
                for e, scores in self.distributions.items()
            },
            "share_only": dict(self.share_only),
        }


def score_report(
    explanations: Sequence[Explanation], legacy: Sequence[tuple[str, Mapping[str, object]]]
) -> ScoreReport:
    """The report of ``stats-2`` ``explanations`` (scores in ``details["scores"]``) beside
    the ``legacy`` (``stats-1``) ``(text, scores)`` of the same features."""
    if len(legacy) != len(explanations):
        raise ValueError(f"{len(legacy)} legacy explanations for {len(explanations)} features")
    current = [(e.text, e.details.get("scores", {})) for e in explanations]
    rows = {LEGACY_VERSION: legacy, VERSION: current}
    return ScoreReport(
        len(explanations),
        {
            name: {s: Distribution.of([sc.get(s) for _, sc in pairs]) for s in SCORES}
            for name, pairs in rows.items()
        },
        {name: sum(only_dataset_shares(t) for t, _ in pairs) for name, pairs in rows.items()},
    )
