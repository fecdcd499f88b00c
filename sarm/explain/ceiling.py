"""How far a feature can be told from its source-matched negatives by text at all.

An explanation is scored by detection on held-out windows against negatives from the
same source, subset and length (``sarm.explain.scoring``). A short text cannot beat
the best classifier that reads the same windows, so :func:`text_ceiling` trains one:
an L2 logistic regression over which tokens a window holds (presence, the scored
end-of-turn token left out: every window at the end holds it), fitted on the explain
windows against their own matched negatives (the store's ``contrast`` split, never
a held-out response) and measured, with the same balanced accuracy, on the held-out
windows against theirs (``matched``). It has one weight per token seen, so it is not an
explanation: it is what any explanation of those windows could hope to reach. A
median near 0.5 says the features are not visible in the text of their windows (a
feature of the whole conversation read at its last token, say), whatever explains them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sarm.explain.scoring import balanced_accuracy
from sarm.explain.types import EvidenceWindow

L2 = 0.1  # penalty on the summed squared weights, per training window
MAX_ITER = 200


def window_tokens(window: EvidenceWindow) -> set[str]:
    """The tokens a window holds, its scored end-of-turn token left out."""
    return {t for i, t in enumerate(window.tokens) if i != window.scored}


def _presence(windows: Sequence[EvidenceWindow], vocab: dict[str, int]) -> torch.Tensor:
    x = torch.zeros(len(windows), len(vocab))
    for row, window in enumerate(windows):
        cols = [vocab[t] for t in window_tokens(window) if t in vocab]
        x[row, cols] = 1.0
    return x


def fit_presence_classifier(
    train: Sequence[EvidenceWindow], l2: float = L2
) -> tuple[dict[str, int], torch.Tensor, float]:
    """``(vocab, weights, bias)`` of the L2 logistic regression of ``active`` on token
    presence over ``train`` (both classes needed)."""
    labels = torch.tensor([float(w.active) for w in train])
    if labels.numel() == 0 or labels.min() == labels.max():
        raise ValueError(f"training windows need both classes ({int(labels.sum())} active)")
    vocab = {t: i for i, t in enumerate(sorted({t for w in train for t in window_tokens(w)}))}
    x = _presence(train, vocab)
    weights = torch.zeros(len(vocab), requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([weights, bias], max_iter=MAX_ITER, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        fit = torch.nn.functional.binary_cross_entropy_with_logits(x @ weights + bias, labels)
        value = fit + l2 * (weights * weights).sum() / len(train)
        value.backward()
        return value

    opt.step(loss)
    return vocab, weights.detach(), float(bias.detach())


def text_ceiling(
    train: Sequence[EvidenceWindow], test: Sequence[EvidenceWindow], l2: float = L2
) -> float | None:
    """Balanced accuracy on ``test`` of the presence classifier fitted on ``train``;
    None when either set lacks a class."""
    if len({w.active for w in train}) < 2 or len({w.active for w in test}) < 2:
        return None
    vocab, weights, bias = fit_presence_classifier(train, l2)
    scores = (_presence(test, vocab) @ weights + bias).numpy()
    return balanced_accuracy(list(np.asarray(scores) > 0), [w.active for w in test])
