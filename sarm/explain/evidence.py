"""Feature evidence gathered in the scoring forward pass (no second pass, no page-time model).

For every scored response, :func:`example_evidence` keeps

- the response's tokens (from the first response token to the scored end-of-turn
  token, so the system prompt and the question are never part of a window) and the
  index of the scored token (the last one);
- for every feature active at the scored token (the non-zero latents of ``z_T``):
  its peak token over the response (its highest non-zero activation), the activation there, and its per-token
  activations in a window of ``spec.window`` tokens each side of the peak.

:class:`TokenCounters` accumulate, over every response token of the pass, per
feature: the tokens where it is active (kept by the TopK and non-zero), the
responses where it is active at any token, and a histogram of its per-token
activations over fixed log-spaced bins (:data:`HIST_EDGES`; bin 0 holds values
below the first edge, negatives included, the last bin values above the last).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

# Fixed log-spaced bin edges for per-token activations: 1e-3 .. 1e3, 4 bins a decade.
HIST_EDGES = np.logspace(-3, 3, 25)
N_BINS = len(HIST_EDGES) + 1


@dataclass(frozen=True)
class EvidenceSpec:
    """What evidence the forward keeps: ``window`` tokens each side of a feature's peak."""

    window: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or not 0 <= self.window <= 512:
            raise ValueError(f"EvidenceSpec.window must be an int in 0..512, got {self.window!r}")


@dataclass
class ExampleEvidence:
    """One response's tokens and, per feature active at its scored token, a window.

    ``tokens`` run from the first response token to the scored token
    (``scored == len(tokens) - 1``); window ``j`` covers
    ``tokens[starts[j] : starts[j] + len(windows[j])]`` for ``features[j]``, whose
    strongest token is ``peaks[j]`` with activation ``peak_values[j]``.
    """

    tokens: list[str]
    token_ids: np.ndarray
    features: np.ndarray
    peaks: np.ndarray
    peak_values: np.ndarray
    starts: np.ndarray
    windows: list[np.ndarray]

    @property
    def scored(self) -> int:
        return len(self.tokens) - 1


@dataclass
class TokenCounters:
    """Per-feature counts over the response tokens of one pass (they add up over passes)."""

    d_sae: int
    n_tokens: int = 0
    n_responses: int = 0
    active_tokens: np.ndarray = field(default=None)  # type: ignore[assignment]
    active_responses: np.ndarray = field(default=None)  # type: ignore[assignment]
    histogram: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.active_tokens is None:
            self.active_tokens = np.zeros(self.d_sae, np.int64)
        if self.active_responses is None:
            self.active_responses = np.zeros(self.d_sae, np.int64)
        if self.histogram is None:
            self.histogram = np.zeros((self.d_sae, N_BINS), np.int64)

    def add(self, values: np.ndarray, indices: np.ndarray) -> None:
        """Count one response: its per-token TopK ``values`` / ``indices``, ``[T, k]``."""
        keep = values != 0
        feats, vals = indices[keep].astype(np.int64), values[keep]
        self.n_tokens += int(values.shape[0])
        self.n_responses += 1
        self.active_tokens += np.bincount(feats, minlength=self.d_sae)
        self.active_responses[np.unique(feats)] += 1
        bins = np.searchsorted(HIST_EDGES, vals, side="right")
        flat = np.bincount(feats * N_BINS + bins, minlength=self.d_sae * N_BINS)
        self.histogram += flat.reshape(self.d_sae, N_BINS)

    def merge(self, other: TokenCounters) -> TokenCounters:
        if other.d_sae != self.d_sae:
            raise ValueError(f"cannot add counters of {other.d_sae} features to {self.d_sae}")
        return TokenCounters(
            self.d_sae,
            self.n_tokens + other.n_tokens,
            self.n_responses + other.n_responses,
            self.active_tokens + other.active_tokens,
            self.active_responses + other.active_responses,
            self.histogram + other.histogram,
        )


def dense_columns(values: np.ndarray, indices: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Activations ``[T, F]`` of ``features`` at every token (0 where the TopK dropped them)."""
    match = indices[:, :, None] == features[None, None, :]
    return (values[:, :, None] * match).sum(axis=1)


def example_evidence(
    values: np.ndarray,
    indices: np.ndarray,
    token_ids: np.ndarray,
    tokens: list[str],
    spec: EvidenceSpec,
) -> ExampleEvidence:
    """Windows of one response from its per-token TopK ``values`` / ``indices`` ``[T, k]``.

    Row ``T - 1`` is the scored token; the features described are its non-zero latents.
    """
    last_v, last_i = values[-1], indices[-1]
    features = last_i[last_v != 0].astype(np.int64)
    acts = dense_columns(values, indices, features)  # [T, F]
    n = acts.shape[0]
    # the strongest kept token (values may be negative: the SARM encode has no ReLU)
    kept = np.where(acts != 0, acts, -np.inf)
    peaks = kept.argmax(axis=0) if features.size else np.zeros(0, np.int64)
    starts = np.clip(peaks - spec.window, 0, None)
    stops = np.minimum(peaks + spec.window + 1, n)
    windows = [
        acts[a:b, j].astype(np.float32) for j, (a, b) in enumerate(zip(starts, stops, strict=True))
    ]
    return ExampleEvidence(
        tokens=list(tokens),
        token_ids=np.asarray(token_ids, np.int32),
        features=features.astype(np.int32),
        peaks=peaks.astype(np.int32),
        peak_values=acts[peaks, np.arange(features.size)].astype(np.float32),
        starts=starts.astype(np.int32),
        windows=windows,
    )


class TokenText:
    """Token strings by id, decoded once per id (a response pass decodes ~1M tokens)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._memo: dict[int, str] = {}

    def __call__(self, ids) -> list[str]:
        out = []
        for tid in np.asarray(ids).tolist():
            text = self._memo.get(tid)
            if text is None:
                text = self._memo[tid] = self._tokenizer.decode([tid])
            out.append(text)
        return out


# ------------------------------------------------------------------ as Arrow tables

RESPONSES_SCHEMA = pa.schema(
    [
        ("example_id", pa.int64()),
        ("tokens", pa.list_(pa.string())),
        ("token_ids", pa.list_(pa.int32())),
        ("scored", pa.int32()),
    ]
)
WINDOWS_SCHEMA = pa.schema(
    [
        ("example_id", pa.int64()),
        ("feature_id", pa.int32()),
        ("peak", pa.int32()),
        ("peak_activation", pa.float32()),
        ("start", pa.int32()),
        ("activations", pa.list_(pa.float32())),
    ]
)

COUNTS_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("active_tokens", pa.int64()),
        ("active_responses", pa.int64()),
        ("histogram", pa.list_(pa.int64())),
    ]
)


def evidence_tables(
    example_ids: np.ndarray, evidence: list[ExampleEvidence]
) -> tuple[pa.Table, pa.Table]:
    """``(responses, windows)`` rows of many responses' evidence, numbered ``example_ids``."""
    ids = np.asarray(example_ids, np.int64)
    if len(ids) != len(evidence):
        raise ValueError(f"{len(ids)} example ids for {len(evidence)} evidence rows")
    responses = pa.table(
        {
            "example_id": ids,
            "tokens": [e.tokens for e in evidence],
            "token_ids": [e.token_ids.tolist() for e in evidence],
            "scored": np.array([e.scored for e in evidence], np.int32),
        },
        schema=RESPONSES_SCHEMA,
    )
    counts = [len(e.features) for e in evidence]
    windows = pa.table(
        {
            "example_id": np.repeat(ids, counts),
            "feature_id": _cat([e.features for e in evidence], np.int32),
            "peak": _cat([e.peaks for e in evidence], np.int32),
            "peak_activation": _cat([e.peak_values for e in evidence], np.float32),
            "start": _cat([e.starts for e in evidence], np.int32),
            "activations": [w.tolist() for e in evidence for w in e.windows],
        },
        schema=WINDOWS_SCHEMA,
    )
    return responses, windows


def counters_table(counters: TokenCounters) -> pa.Table:
    """One row per feature active on any token: counts and histogram (plus pass totals)."""
    live = np.flatnonzero(counters.active_tokens)
    return pa.table(
        {
            "feature_id": live.astype(np.int32),
            "active_tokens": counters.active_tokens[live],
            "active_responses": counters.active_responses[live],
            "histogram": [row.tolist() for row in counters.histogram[live]],
        },
        schema=COUNTS_SCHEMA,
    )


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
