"""The ``stats`` explainer: a short deterministic phrase and a detection rule from evidence.

Offline and instant: it reads what the store aggregated (contrastive tokens and
bigrams of a feature's explanation windows, metadata shares, chosen vs rejected
counts) and writes e.g. ```I can't`, `I'm sorry` · 91% harmless-base · chosen x3.2``.
Its :class:`Rule` is the predictor the score is measured with: a window is predicted
active when it holds one of the rule's tokens or bigrams, or (when the rule names
one) its response has the rule's metadata value.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sarm.explain.types import EvidenceWindow

VERSION = "stats-1"
MAX_RULE_TOKENS = 3
MIN_RATIO = 2.0
META_SHARE = 0.5
META_LIFT = 1.5
ROLE_RATIO = 1.5
ROLE_MIN = 5  # activations on the leading side before a lean is named


@dataclass(frozen=True)
class Contrastive:
    """A token or bigram over-represented where the feature is active, with its counts."""

    text: str
    kind: str  # "token" or "bigram"
    active_count: int
    background_count: int
    ratio: float


@dataclass(frozen=True)
class MetaShare:
    """The share of a feature's activations with one metadata value, and its lift."""

    field: str
    value: str
    n_active: int
    share: float
    lift: float
    chosen: int = 0
    rejected: int = 0
    preference_score: float | None = None


@dataclass(frozen=True)
class Rule:
    """Predicts whether a feature fires in a window: any rule token / bigram, or metadata."""

    tokens: tuple[str, ...] = ()
    bigrams: tuple[str, ...] = ()
    metadata: tuple[str, str] | None = None

    @property
    def empty(self) -> bool:
        return not (self.tokens or self.bigrams or self.metadata)

    def predict(self, window: EvidenceWindow, meta: Mapping[str, str] | None = None) -> bool:
        if self.empty:
            return True
        toks = window.tokens
        if self.tokens and any(t in self.tokens for t in toks):
            return True
        pairs = (a + b for a, b in itertools.pairwise(toks))
        if self.bigrams and any(p in self.bigrams for p in pairs):
            return True
        meta = meta or {}
        return self.metadata is not None and meta.get(self.metadata[0]) == self.metadata[1]

    def to_dict(self) -> dict[str, object]:
        return {
            "tokens": list(self.tokens),
            "bigrams": list(self.bigrams),
            "metadata": list(self.metadata) if self.metadata else None,
        }


@dataclass(frozen=True)
class StatsExplanation:
    text: str
    rule: Rule
    details: dict[str, object] = field(default_factory=dict)


def shown(text: str) -> str:
    """A token as a phrase shows it: whitespace trimmed, in backticks."""
    return f"`{text.strip()}`"


def stats_explanation(
    contrastive: Sequence[Contrastive], metadata: Sequence[MetaShare]
) -> StatsExplanation:
    """The phrase and rule of one feature (deterministic: same evidence, same text)."""
    strong = [c for c in contrastive if c.ratio >= MIN_RATIO]
    ranked = sorted(strong, key=lambda c: (-c.active_count, -c.ratio, c.text))
    rule_items = ranked[:MAX_RULE_TOKENS]
    parts = []
    named = _phrase_tokens(ranked)
    if named:
        parts.append(", ".join(shown(c.text) for c in named))
    meta = _dominant(metadata)
    if meta is not None:
        parts.append(f"{meta.share:.0%} {meta.value}")
    role = _role_part(metadata)
    if role:
        parts.append(role)
    text = " · ".join(parts) if parts else "fires broadly (no distinctive token or source)"
    rule = Rule(
        tokens=tuple(c.text for c in rule_items if c.kind == "token"),
        bigrams=tuple(c.text for c in rule_items if c.kind == "bigram"),
        metadata=(meta.field, meta.value) if meta is not None else None,
    )
    details = {"rule": rule.to_dict(), "version": VERSION}
    return StatsExplanation(text, rule, details)


def _phrase_tokens(ranked: Sequence[Contrastive]) -> list[Contrastive]:
    """Up to two entries to name, skipping a token already inside a named bigram."""
    named: list[Contrastive] = []
    for c in ranked:
        if any(c.text.strip() in n.text for n in named):
            continue
        named.append(c)
        if len(named) == 2:
            break
    return named


def _dominant(metadata: Sequence[MetaShare]) -> MetaShare | None:
    """The source or subset that holds most of the feature's activations, if one does."""
    cands = [
        m for m in metadata if m.field != "role" and m.share >= META_SHARE and m.lift >= META_LIFT
    ]
    return max(cands, key=lambda m: (m.lift * m.share, m.value), default=None)


def _role_part(metadata: Sequence[MetaShare]) -> str:
    """``chosen x3.2`` / ``rejected x2.0`` when activations lean to one side."""
    roles = {m.value: m.n_active for m in metadata if m.field == "role"}
    c, j = roles.get("chosen", 0), roles.get("rejected", 0)
    if max(c, j) < ROLE_MIN:
        return ""
    if c >= ROLE_RATIO * max(j, 1) and c > j:
        return f"chosen x{c / max(j, 1):.1f}"
    if j >= ROLE_RATIO * max(c, 1) and j > c:
        return f"rejected x{j / max(c, 1):.1f}"
    return ""
