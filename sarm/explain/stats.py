"""The ``stats`` explainer: a short deterministic phrase about content, and its predictors.

Offline and instant: it reads what the store aggregated (contrastive tokens and
bigrams of a feature's explanation windows, metadata shares, chosen vs rejected
counts) and the explanation windows themselves, and writes what the feature fires on,
e.g. ```Sorry, I ⟦can't⟧` · `help` · refusal phrase · in the opening``: the phrase at
its peak token with its neighbours, over-represented tokens, content traits of its
windows (refusal phrase, list item, code) and where in the response it peaks (the
opening, the end-of-turn token), each named only when it is over-represented against
a background of windows at random positions. Dataset shares (source, subset,
chosen / rejected) are never the text: they stay in ``details["metadata"]``.

Its :class:`Rule` is what the scores are measured with: :meth:`Rule.predict` (detection:
a window holds one of the rule's tokens or bigrams or shows a named content trait) and
:meth:`Rule.predict_token` (fuzzing: the highlighted token is one of them, or sits where
the text says the feature peaks). :func:`legacy_explanation` is the previous version
(``stats-1``, which named a dominant source), kept as the baseline of the score report.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sarm.explain.text import PEAK
from sarm.explain.types import EvidenceWindow

VERSION = "stats-2"
LEGACY_VERSION = "stats-1"
MAX_RULE_TOKENS = 3
MIN_RATIO = 2.0
META_SHARE = 0.5
META_LIFT = 1.5
ROLE_RATIO = 1.5
ROLE_MIN = 5  # activations on the leading side before a lean is named
OPENING = 8  # response tokens that count as its opening
TRAIT_SHARE = 0.5  # share of explanation windows showing a trait before it is named
TRAIT_LIFT = 2.0  # ... and its lift over the background windows
PEAK_SHARE = 0.3  # share of windows peaking on one token before its phrase is named
PEAK_MIN = 2
CONTEXT_SHARE = 0.3  # share of windows holding a context token before it is named
CONTEXT_LIFT = 3.0  # ... and how many times more often than in the background windows
MAX_CONTEXT = 3
BROAD = "fires broadly (no distinctive phrase, trait or position)"

END, OPENING_TRAIT = "at the end-of-turn token", "in the opening"
#: content traits: a pattern over a window's text (its tokens joined)
CONTENT_TRAITS = {
    "refusal phrase": re.compile(
        r"\b(?:I|we)\s*(?:can(?:'|’)?t|cannot|won(?:'|’)?t|will not|am not able|'m not able|"
        r"am unable|'m unable|must decline)\b|\b(?:sorry|apologi[sz]e)\b|\bas an ai\b|"
        r"\bnot (?:appropriate|able to)\b",
        re.IGNORECASE,
    ),
    "list item": re.compile(r"(?:^|\n)[ \t]*(?:[-*•]|\d{1,2}[.)])[ \t]+\S"),
    "code": re.compile(
        r"```|\b(?:def|return|function|public|import|func|fn|let|const|var|class)\b.*[({=:]"
        r"|[;{}]\s*(?:\n|$)|#include|==|=>|\+=",
    ),
}
TRAITS = (*CONTENT_TRAITS, OPENING_TRAIT, END)
_SHARE_PART = re.compile(r"^\d+(?:\.\d+)?% \S.*$|^(?:chosen|rejected) x\d+(?:\.\d+)?$")


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
    """Predicts where a feature fires: in a window (detection) or at a token (fuzzing).

    Detection: any rule token / bigram or ``context`` token in the window, a named
    content trait shown by it, or (``stats-1`` rules only) its response's metadata value. Fuzzing: the
    highlighted token is a rule token or the ``peak`` token, ends or starts a rule
    bigram, or sits where the rule says the feature peaks (``at_end``: the scored
    end-of-turn token; ``opening``: the response's first :data:`OPENING` tokens).
    """

    tokens: tuple[str, ...] = ()
    bigrams: tuple[str, ...] = ()
    metadata: tuple[str, str] | None = None
    traits: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    peak: str | None = None
    at_end: bool = False
    opening: bool = False

    def __post_init__(self) -> None:
        unknown = [t for t in self.traits if t not in CONTENT_TRAITS]
        if unknown:
            raise ValueError(f"rule traits {unknown}: known ones are {list(CONTENT_TRAITS)}")

    @property
    def empty(self) -> bool:
        """No window-level claim: detection then says yes to every window (chance)."""
        return not (self.tokens or self.bigrams or self.metadata or self.traits or self.context)

    def predict(self, window: EvidenceWindow, meta: Mapping[str, str] | None = None) -> bool:
        if self.empty:
            return True
        toks = window.tokens
        if any(t in self.tokens or t in self.context for t in toks):
            return True
        pairs = (a + b for a, b in itertools.pairwise(toks))
        if self.bigrams and any(p in self.bigrams for p in pairs):
            return True
        if self.traits and content_traits(window) & set(self.traits):
            return True
        meta = meta or {}
        return self.metadata is not None and meta.get(self.metadata[0]) == self.metadata[1]

    def predict_token(self, window: EvidenceWindow, index: int) -> bool:
        """Whether the feature fires at ``window.tokens[index]``, by this rule."""
        if self.empty and not (self.peak or self.at_end or self.opening):
            return True
        toks = window.tokens
        if toks[index] in self.tokens or toks[index] == self.peak:
            return True
        if index > 0 and toks[index - 1] + toks[index] in self.bigrams:
            return True
        if index + 1 < len(toks) and toks[index] + toks[index + 1] in self.bigrams:
            return True
        if self.at_end and index == window.scored:
            return True
        return self.opening and window.offset is not None and window.offset + index < OPENING

    def to_dict(self) -> dict[str, object]:
        return {
            "tokens": list(self.tokens),
            "bigrams": list(self.bigrams),
            "metadata": list(self.metadata) if self.metadata else None,
            "traits": list(self.traits),
            "context": list(self.context),
            "peak": self.peak,
            "at_end": self.at_end,
            "opening": self.opening,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Rule:
        """The inverse of :meth:`to_dict` (a ``stats-1`` rule has only the first three keys)."""
        meta = data.get("metadata")
        return cls(
            tokens=tuple(data.get("tokens") or ()),
            bigrams=tuple(data.get("bigrams") or ()),
            metadata=(str(meta[0]), str(meta[1])) if meta else None,
            traits=tuple(data.get("traits") or ()),
            context=tuple(data.get("context") or ()),
            peak=data.get("peak"),
            at_end=bool(data.get("at_end", False)),
            opening=bool(data.get("opening", False)),
        )


def content_traits(window: EvidenceWindow) -> set[str]:
    """The :data:`CONTENT_TRAITS` a window's text shows."""
    text = "".join(window.tokens)
    return {name for name, pattern in CONTENT_TRAITS.items() if pattern.search(text)}


def window_traits(window: EvidenceWindow, focus: int | None) -> set[str]:
    """Content traits of ``window``, plus where its token ``focus`` sits in the response."""
    found = content_traits(window)
    if focus is not None and focus == window.scored:
        found.add(END)
    elif focus is not None and window.offset is not None and window.offset + focus < OPENING:
        found.add(OPENING_TRAIT)
    return found


def trait_rates(windows: Sequence[EvidenceWindow], focus: Sequence[int | None]) -> dict[str, float]:
    """Per trait of :data:`TRAITS`, the share of ``windows`` showing it (at ``focus``)."""
    if len(windows) != len(focus):
        raise ValueError(f"{len(focus)} focus tokens for {len(windows)} windows")
    counts = Counter(t for w, f in zip(windows, focus, strict=True) for t in window_traits(w, f))
    return {t: counts[t] / len(windows) if windows else 0.0 for t in TRAITS}


@dataclass(frozen=True)
class Background:
    """What windows at random places show: trait rates and per token the number of
    windows holding it (the scored end-of-turn token left out)."""

    traits: dict[str, float]
    windows_with: Counter
    n: int

    @classmethod
    def of(cls, windows: Sequence[EvidenceWindow], focus: Sequence[int | None]) -> Background:
        return cls(trait_rates(windows, focus), _windows_with(windows), len(windows))


def _windows_with(windows: Sequence[EvidenceWindow]) -> Counter:
    return Counter(
        t
        for w in windows
        for t in {x for i, x in enumerate(w.tokens) if i != w.scored and x.strip()}
    )


def context_tokens(windows: Sequence[EvidenceWindow], background: Background) -> list[str]:
    """Tokens held by at least :data:`CONTEXT_SHARE` of ``windows`` and :data:`CONTEXT_LIFT`
    times more often than by the background windows (smoothed), most frequent first."""
    counts, n = _windows_with(windows), len(windows)
    found = []
    for token, k in counts.items():
        lift = ((k + 0.5) / (n + 1)) / (
            (background.windows_with.get(token, 0) + 0.5) / (background.n + 1)
        )
        if k >= max(PEAK_MIN, CONTEXT_SHARE * n) and lift >= CONTEXT_LIFT:
            found.append((-k, -lift, token))
    return [t for *_, t in sorted(found)[:MAX_CONTEXT]]


def only_dataset_shares(text: str) -> bool:
    """Whether an explanation says nothing but dataset shares (``91% harmless-base``,
    ``chosen x3.2``): it names where a feature fires, not what it means."""
    parts = [p.strip() for p in text.split("·") if p.strip()]
    return bool(parts) and all(_SHARE_PART.match(p) for p in parts)


@dataclass(frozen=True)
class StatsExplanation:
    text: str
    rule: Rule
    details: dict[str, object] = field(default_factory=dict)


def shown(text: str) -> str:
    """A token as a phrase shows it: whitespace trimmed, in backticks."""
    return f"`{text.strip()}`"


def stats_explanation(
    contrastive: Sequence[Contrastive],
    windows: Sequence[EvidenceWindow],
    metadata: Sequence[MetaShare] = (),
    background: Background | None = None,
    end_background: Background | None = None,
) -> StatsExplanation:
    """The phrase and rule of one feature from its explanation ``windows`` (active ones,
    peaks marked) and contrastive tokens. ``background``: windows at random positions
    (what traits and context tokens are measured against), ``end_background``: windows
    at the end of random responses (for a feature that peaks at the end-of-turn token).
    Deterministic: same evidence, same text. ``metadata`` only fills
    ``details["metadata"]``."""
    active = [w for w in windows if w.active]
    rates = trait_rates(active, [w.peak for w in active])
    base = background.traits if background else {}
    named = _named_traits(rates, base)
    against = end_background if END in named and end_background else background
    strong = sorted(
        (c for c in contrastive if c.ratio >= MIN_RATIO),
        key=lambda c: (-c.active_count, -c.ratio, c.text),
    )
    peak, phrase = _peak_phrase(active, at_end=END in named)
    parts = [phrase] if phrase else []
    listed = [c for c in _phrase_tokens(strong) if c.text.strip() not in phrase]
    if listed:
        parts.append(", ".join(shown(c.text) for c in listed))
    context = [
        t
        for t in (context_tokens(active, against) if against else [])
        if t.strip() not in " ".join(parts)
    ]
    if context:
        parts.append("with " + ", ".join(dict.fromkeys(shown(t) for t in context)))
    parts += [t for t in TRAITS if t in named and not (t == END and phrase.startswith(END))]
    rule_items = strong[:MAX_RULE_TOKENS]
    rule = Rule(
        tokens=tuple(c.text for c in rule_items if c.kind == "token"),
        bigrams=tuple(c.text for c in rule_items if c.kind == "bigram"),
        traits=tuple(t for t in CONTENT_TRAITS if t in named),
        context=tuple(context),
        peak=peak,
        at_end=END in named,
        opening=OPENING_TRAIT in named,
    )
    details = {
        "rule": rule.to_dict(),
        "version": VERSION,
        "traits": {t: [round(rates[t], 3), round(base.get(t, 0.0), 3)] for t in TRAITS},
        "metadata": metadata_details(metadata),
    }
    return StatsExplanation(" · ".join(parts) if parts else BROAD, rule, details)


def _named_traits(rates: Mapping[str, float], background: Mapping[str, float]) -> set[str]:
    """Traits shown by at least :data:`TRAIT_SHARE` of the windows, :data:`TRAIT_LIFT` x
    more often than in the background."""
    return {
        t
        for t, share in rates.items()
        if share >= TRAIT_SHARE and share >= TRAIT_LIFT * background.get(t, 0.0)
    }


def _peak_phrase(windows: Sequence[EvidenceWindow], at_end: bool) -> tuple[str | None, str]:
    """The token most windows peak on and its phrase with its usual neighbours, e.g.
    ```Sorry, I ⟦can't⟧` ``; for a feature peaking at the end-of-turn token, what the
    response ends with (``at the end-of-turn token, after `.```)."""
    if at_end:
        ends = Counter(_tail(w) for w in windows if w.peak is not None and w.peak == w.scored)
        tail, count = max(ends.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
        if tail.strip() and count >= PEAK_MIN and count >= PEAK_SHARE * len(windows):
            return None, f"{END}, after {shown(tail)}"
        return None, ""
    peaks = [w for w in windows if w.peak is not None and w.peak != w.scored]
    counts = Counter(w.tokens[w.peak] for w in peaks)
    token, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
    if not token.strip() or count < PEAK_MIN or count < PEAK_SHARE * len(windows):
        return None, ""
    at = [w for w in peaks if w.tokens[w.peak] == token]
    left = _usual(w.tokens[w.peak - 1] if w.peak > 0 else "" for w in at)
    right = _usual(
        w.tokens[w.peak + 1] if w.peak + 1 < len(w.tokens) and w.peak + 1 != w.scored else ""
        for w in at
    )
    core = token if left else token.lstrip()
    return token, f"`{(left + PEAK[0] + core + PEAK[1] + right).strip()}`"


def _tail(window: EvidenceWindow) -> str:
    """The last two tokens before the scored end-of-turn token."""
    return "".join(window.tokens[max(0, window.scored - 2) : window.scored])


def _usual(neighbours) -> str:
    """The neighbour at least half the occurrences share, else nothing."""
    counts = Counter(neighbours)
    total = sum(counts.values())
    best, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
    return best if n * 2 >= total and best.strip() else ""


def metadata_details(metadata: Sequence[MetaShare]) -> dict[str, object]:
    """Where a feature fires, beside its text: the top source and subset (share, lift)
    and the chosen / rejected lean."""
    out: dict[str, object] = {}
    for name in ("source", "subset"):
        rows = [m for m in metadata if m.field == name]
        if rows:
            top = max(rows, key=lambda m: (m.share, m.value))
            out[name] = {
                "value": top.value,
                "share": round(top.share, 4),
                "lift": round(top.lift, 3),
            }
    lean = _role_part(metadata)
    if lean:
        out["role"] = lean
    return out


def legacy_explanation(
    contrastive: Sequence[Contrastive], metadata: Sequence[MetaShare]
) -> StatsExplanation:
    """The ``stats-1`` phrase and rule (tokens, a dominant source, a role lean): the
    baseline the score report compares with; it may say only dataset shares."""
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
    details = {"rule": rule.to_dict(), "version": LEGACY_VERSION}
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
