"""The shapes explainers share: a window of tokens around a feature's peak, and an explanation.

Explainers (``stats`` from store statistics, ``llm`` through an OpenAI-compatible
endpoint) read :class:`EvidenceWindow` rows and write :class:`Explanation` rows;
the store persists them and scores each explanation by detection accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EvidenceWindow:
    """Tokens of one response around one position, with one feature's activation at each.

    ``active`` says whether the feature fires in this window (windows of inactive
    responses are the negatives of detection scoring); ``peak`` indexes the
    strongest token inside ``tokens`` (None where nothing fires); ``scored`` indexes
    the end-of-turn token whose latents the reward reads, when the window holds it;
    ``offset`` is the response index of ``tokens[0]`` and ``length`` the response's
    token count, where known (positions in the response: the opening, the end).
    """

    example_id: int
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    active: bool
    peak: int | None = None
    scored: int | None = None
    offset: int | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.activations):
            raise ValueError(
                f"window of example {self.example_id}: {len(self.tokens)} tokens "
                f"but {len(self.activations)} activations"
            )
        for name, index in (("peak", self.peak), ("scored", self.scored)):
            if index is not None and not 0 <= index < len(self.tokens):
                raise ValueError(
                    f"window of example {self.example_id}: {name} index {index} "
                    f"outside its {len(self.tokens)} tokens"
                )


@dataclass(frozen=True)
class Explanation:
    """What one explainer says a feature means, and how well that predicts where it fires.

    ``source`` is ``stats``, ``llm:<model>`` or ``human``; ``score`` is the balanced
    detection accuracy on held-out windows (None until scored); ``monosemanticity``
    is the 1-5 rating an LLM gives, when it gives one.
    """

    feature_id: int
    text: str
    source: str
    version: str
    score: float | None = None
    monosemanticity: int | None = None
    evidence_hash: str = ""
    details: dict[str, object] = field(default_factory=dict)
