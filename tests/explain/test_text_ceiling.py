"""The text ceiling's classifier on hand-made windows, against what the windows say."""

from __future__ import annotations

import pytest

from sarm.explain.ceiling import fit_presence_classifier, text_ceiling, window_tokens
from sarm.explain.types import EvidenceWindow


def window(i: int, tokens: list[str], active: bool) -> EvidenceWindow:
    toks = (*tokens, "<eot>")
    return EvidenceWindow(i, toks, (0.0,) * len(toks), active, scored=len(toks) - 1)


def windows(marker: str, n: int, offset: int = 0) -> list[EvidenceWindow]:
    """``n`` positives holding ``marker`` and ``n`` negatives without it."""
    filler = [" a", " b", " c", " d"]
    out = [window(offset + i, [filler[i % 4], marker, filler[(i + 1) % 4]], True) for i in range(n)]
    out += [window(offset + n + i, [filler[i % 4], filler[(i + 2) % 4]], False) for i in range(n)]
    return out


def test_a_token_that_marks_the_positives_is_found_and_scored_on_unseen_windows():
    assert text_ceiling(windows(" zebra", 12), windows(" zebra", 8, offset=100)) == 1.0


def test_a_marker_that_does_not_carry_over_scores_chance():
    # trained on ` zebra`; the test positives hold ` lion` instead: nothing it learned applies
    assert text_ceiling(windows(" zebra", 12), windows(" lion", 8, offset=100)) == 0.5


def test_labels_against_the_learned_token_score_zero():
    flipped = [
        EvidenceWindow(w.example_id, w.tokens, w.activations, not w.active, scored=w.scored)
        for w in windows(" zebra", 8, offset=100)
    ]
    assert text_ceiling(windows(" zebra", 12), flipped) == 0.0


def test_the_scored_token_is_never_a_feature_and_one_class_is_refused():
    w = window(0, [" x"], True)
    assert window_tokens(w) == {" x"}
    vocab, weights, _ = fit_presence_classifier(windows(" zebra", 6))
    assert "<eot>" not in vocab and weights[vocab[" zebra"]] > 0
    assert text_ceiling([w], windows(" zebra", 2)) is None
    with pytest.raises(ValueError, match="both classes"):
        fit_presence_classifier([w])
